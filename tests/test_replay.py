"""Replaying a run's meta-batches (`experiments/replay_ghn.py`): the same batches, or a clear refusal."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "experiments" / "train_ghn.py"
REPLAY = ROOT / "experiments" / "replay_ghn.py"
# lr 0: the weights never change, so the final checkpoint is the model of every logged step.
TINY = {
    "ghn": {"hid": 8, "dec_hid": 4, "max_shape": [16, 16, 3, 3]},
    "narrow": True, "meta_batch": 2, "batch_size": 8, "steps": 4, "ckpt_every": 4, "log_every": 1, "workers": 0,
    "threads": 1, "lr": 0.0,
}


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _train(tmp_path: Path, name: str, **kw) -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / name), **kw}))
    proc = _python(str(TRAIN), "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / name


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("replay"), "run")


def test_replay_reproduces_the_logged_losses_of_an_unchanged_model(run, tmp_path):
    proc = _python(str(REPLAY), "--set", f"run={run}", f"meta_models=[{run / 'final.pt'}]", "window=2",
                   f"out={tmp_path / 'replay'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 1-2 | 2 |" in proc.stdout and "| 3-4 | 2 |" in proc.stdout
    with open(tmp_path / "replay.csv") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    for r in rows:  # columns: step, run loss, run acc, model loss, model acc
        assert abs(float(r[1]) - float(r[3])) < 2e-3, (header, r)
        assert abs(float(r[2]) - float(r[4])) < 1e-3, (header, r)


def test_replay_refuses_runs_on_other_streams(run, tmp_path):
    other = _train(tmp_path, "other", seed=1)
    proc = _python(str(REPLAY), "--set", f"run={run}", f"meta_models=[{run / 'final.pt'}]", f"compare=[{other}]",
                   f"out={tmp_path / 'replay'}")
    assert proc.returncode != 0 and "did not train on" in proc.stderr

    forked = tmp_path / "forked"
    forked.mkdir()
    (forked / "log.csv").write_text((run / "log.csv").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (forked / "config.yaml").write_text(yaml.safe_dump({**cfg, "init_from": str(run / "final.pt")}))
    proc = _python(str(REPLAY), "--set", f"run={forked}")
    assert proc.returncode != 0 and "may continue its data streams" in proc.stderr

    proc = _python(str(REPLAY), "--set", f"run={tmp_path / 'missing'}")
    assert proc.returncode != 0 and "no training log at" in proc.stderr
