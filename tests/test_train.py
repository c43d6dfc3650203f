"""Meta-training: a run killed with SIGKILL resumes to the same weights; DDP on CPU (gloo)."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from deepnets.loader import MetaBatchLoader
from ghn import GHN, GHNConfig, functional_forward, hub
from ghn.data import cifar10_loader

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "experiments" / "train_ghn.py"
TORCHRUN_2 = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(TRAIN)]  # 2 CPU processes, gloo
TINY = {
    "ghn": {"hid": 8, "dec_hid": 4, "max_shape": [16, 16, 3, 3]},
    "narrow": True, "meta_batch": 2, "batch_size": 8, "steps": 8, "ckpt_every": 2, "log_every": 1, "workers": 0,
    "threads": 1,
    "milestones": [0.5],
}


def _config(tmp_path: Path, out: str, **kw) -> Path:
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / out), **kw}))
    return path


def _run(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _finish(proc: subprocess.Popen) -> str:
    out = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    _finish(_run([str(TRAIN), "--config", str(_config(tmp_path, "straight"))]))

    cfg = _config(tmp_path, "killed")
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    proc = _run([str(TRAIN), "--config", str(cfg)])
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=True)["step"]
    assert 0 < saved < TINY["steps"], "the run was not interrupted mid-training"
    assert not (tmp_path / "killed" / "final.pt").exists()

    _finish(_run([str(TRAIN), "--config", str(cfg), "--resume"]))
    a, b = _weights(tmp_path / "straight" / "final.pt"), _weights(tmp_path / "killed" / "final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume from step {saved}"
    with open(tmp_path / "killed" / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == list(range(1, TINY["steps"] + 1))  # no step lost or logged twice
    assert (tmp_path / "killed" / "curve.png").exists()


def test_stop_at_pauses_on_the_full_schedule_and_resume_finishes_it(tmp_path):
    _finish(_run([str(TRAIN), "--config", str(_config(tmp_path, "straight", steps=4, ckpt_every=4))]))
    cfg = _config(tmp_path, "paused", steps=4, ckpt_every=4)
    out = _finish(_run([str(TRAIN), "--config", str(cfg), "stop_at=1"]))
    assert "paused at step 1 of 4" in out
    assert torch.load(tmp_path / "paused" / "checkpoint.pt", weights_only=True)["step"] == 1
    assert not (tmp_path / "paused" / "final.pt").exists()

    # A paused run is neither overwritten by a fresh start nor resumed with other data streams.
    for args, message in [([], "checkpoint.pt exists: pass --resume"),
                          (["--resume", "meta_batch=1"], "saved meta_batch_size=2, this loader has 1"),
                          (["--resume", "ghn.hid=4"], "holds a meta-model with another config")]:
        proc = _run([str(TRAIN), "--config", str(cfg), *args])
        out = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode != 0 and message in out, out[-2000:]

    _finish(_run([str(TRAIN), "--config", str(cfg), "--resume"]))
    a, b = _weights(tmp_path / "straight" / "final.pt"), _weights(tmp_path / "paused" / "final.pt")
    for k in a:  # the lr milestone (step 2) came from steps=4, not from the pause
        assert torch.equal(a[k], b[k]), f"{k} differs after a pause at step 1"
    with open(tmp_path / "paused" / "log.csv") as f:  # the lr each step used
        assert [float(r["lr"]) for r in csv.DictReader(f)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])


def test_channels_last_images_give_the_same_loss_and_gradients(tmp_path, monkeypatch):
    """The memory format of a run's images is a speed setting: the same step in both formats
    computes the same loss and meta-model gradients. Compared in float64, because a random
    meta-model's float32 gradients cancel enough for rounding to show at the 1% level."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    from train_ghn import TrainConfig, data_streams

    cfg = TrainConfig.load(str(_config(tmp_path, "formats", meta_batch=4)), [])
    results = []
    for channels_last in (False, True):
        dataset, images = data_streams(dataclasses.replace(cfg, channels_last=channels_last))
        nets, graphs = next(iter(MetaBatchLoader(dataset, num_workers=0)))
        x, y = next(iter(images))
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.manual_seed(0)
        meta = GHN(GHNConfig.from_dict(cfg.ghn)).double()
        params = meta(graphs)
        x = x.double()  # keeps the strides
        loss = torch.stack([F.cross_entropy(functional_forward(n.double(), p, x), y)
                            for n, p in zip(nets, params)]).mean()
        loss.backward()
        results.append((loss.detach(), {k: p.grad for k, p in meta.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.allclose(loss_a, loss_b, rtol=1e-12)
    assert grads_a and grads_a.keys() == grads_b.keys()
    for k in grads_a:
        assert torch.allclose(grads_a[k], grads_b[k], rtol=1e-9, atol=1e-14), f"{k} differs with channels-last images"


def test_augment_false_trains_on_the_stored_images(tmp_path, monkeypatch):
    """`augment=false` reaches the image stream: the same images and labels in the same
    order, without the crop and flip that the default applies."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    from train_ghn import TrainConfig, data_streams

    cfg = TrainConfig.load(str(_config(tmp_path, "augment")), [])
    plain = cifar10_loader("train", cfg.data_root, cfg.batch_size, seed=cfg.seed, augment=False,
                           channels_last=cfg.channels_last)
    x_aug, y_aug = next(iter(data_streams(cfg)[1]))
    x_off, y_off = next(iter(data_streams(dataclasses.replace(cfg, augment=False))[1]))
    x_plain, y_plain = next(iter(plain))
    assert torch.equal(y_off, y_plain) and torch.equal(y_aug, y_plain)
    assert torch.equal(x_off, x_plain)
    assert not torch.equal(x_aug, x_plain)


def test_resume_shortened_past_a_milestone_decays_at_once(tmp_path):
    """Paused before the milestone of steps=8 (step 4), resumed with steps=4: the new
    milestone (step 2) is already behind, so the very next step runs at the decayed rate."""
    cfg = _config(tmp_path, "short", steps=8, ckpt_every=3)
    _finish(_run([str(TRAIN), "--config", str(cfg), "stop_at=3"]))
    _finish(_run([str(TRAIN), "--config", str(cfg), "steps=4", "--resume"]))
    with open(tmp_path / "short" / "log.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4])


def test_ema_averages_the_weights_of_every_step_across_pauses(tmp_path, monkeypatch):
    """ema.pt after step t is 0.75 * (its value after step t-1) + 0.25 * (the weights of step
    t), starting from step 1's weights, also where a pause and --resume lie between."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    from train_ghn import TrainConfig, train

    path, out = _config(tmp_path, "ema", steps=3, ckpt_every=1, ema=0.75), tmp_path / "ema"
    weights, averages = [], []
    threads = torch.get_num_threads()
    try:
        for stop_at in (1, 2, 3):
            train(TrainConfig.load(str(path), [f"stop_at={stop_at}"]), resume=stop_at > 1)
            weights.append(torch.load(out / "checkpoint.pt", weights_only=True)["meta_model"]["state_dict"])
            averages.append(torch.load(out / "ema.pt", weights_only=True)["meta_model"]["state_dict"])
    finally:
        torch.set_num_threads(threads)  # the run set its own
    expected = weights[0]
    for step, (w, average) in enumerate(zip(weights, averages), 1):
        if step > 1:
            expected = {k: 0.75 * expected[k] + 0.25 * w[k] for k in w}
        assert average.keys() == w.keys()
        for k in w:
            assert torch.allclose(average[k], expected[k], rtol=1e-5, atol=1e-7), f"{k} after step {step}"
    assert any(not torch.allclose(averages[-1][k], weights[-1][k]) for k in weights[-1])  # an average, not a copy
    meta, record = hub.load_checkpoint(out / "ema.pt")  # as eval_ghn.py and export_pretrained.py read it
    assert all(torch.equal(meta.state_dict()[k], averages[-1][k]) for k in averages[-1])
    assert record["step"] == 3
    assert {k: record["stages"][-1].get(k) for k in ("ema", "ema_updates")} == {"ema": 0.75, "ema_updates": 3}


def test_a_pause_is_left_out_of_the_recorded_compute(tmp_path, monkeypatch):
    """A step paused with SIGSTOP counts from its SIGCONT: here the pause is simulated by a
    6 s sleep inside step 2's forward pass, ended by a SIGCONT the process sends itself."""
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import train_ghn

    calls = []

    def paused_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the first network of step 2 (meta-batch 2)
            time.sleep(6)
            os.kill(os.getpid(), signal.SIGCONT)
        return functional_forward(*args, **kwargs)

    monkeypatch.setattr(train_ghn, "functional_forward", paused_forward)
    handler, threads = signal.getsignal(signal.SIGCONT), torch.get_num_threads()
    try:
        train_ghn.train(train_ghn.TrainConfig.load(str(_config(tmp_path, "pause", steps=3, ckpt_every=3)), []))
    finally:
        torch.set_num_threads(threads)  # the run set its own
    assert len(calls) == 6
    seconds = torch.load(tmp_path / "pause" / "checkpoint.pt", weights_only=True)["stats"]["seconds"]
    assert 0 < seconds < 6, seconds  # three tiny steps (~1.5 s); the sleep before the SIGCONT is not among them
    assert signal.getsignal(signal.SIGCONT) == handler  # the run's handler is gone, the previous one back


@pytest.mark.parametrize("args, message", [
    (["stop_at=9"], "stop_at must be a step in 1..steps=8"),
    (["--resume"], "--resume: no checkpoint at"),
    (["learning_rate=3"], "unknown TrainConfig key(s) ['learning_rate']"),
    (["threads=0"], "threads must be at least 1"),
    (["--set", "threads=0"], "threads must be at least 1"),
    (["log_every=0"], "log_every must be at least 1, got 0"),
    (["warmup=-1"], "warmup must be a number of steps, 0 or more, got -1"),
    (["ema=1"], "ema must be a decay in [0, 1) (or null for none), got 1"),
])
def test_bad_input_is_a_clear_error(tmp_path, args, message):
    proc = _run([str(TRAIN), "--config", str(_config(tmp_path, "bad")), *args])
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode != 0 and message in out


@pytest.mark.slow
def test_ddp_two_cpu_processes_take_different_architectures(tmp_path):
    cfg = _config(tmp_path, "ddp", steps=3, ckpt_every=3)
    _finish(_run([*TORCHRUN_2, "--config", str(cfg)]))
    with open(tmp_path / "ddp" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for row in rows:
        rank0, rank1 = row["archs"].split("|")
        assert set(rank0.split()) != set(rank1.split())
    ckpt = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3 and len(ckpt["archs"]) == 2 and ckpt["stats"]["archs_seen"] == 3 * 2 * 2
    proc = _run([str(TRAIN), "--config", str(cfg), "steps=4", "--resume"])  # one process cannot continue two streams
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode != 0 and "written by 2 process(es), this run has 1" in out

    # A fork on as many processes continues every rank's data stream.
    fork = _config(tmp_path, "fork", steps=1, ckpt_every=1, init_from=str(tmp_path / "ddp" / "checkpoint.pt"))
    _finish(_run([*TORCHRUN_2, "--config", str(fork)]))
    forked = torch.load(tmp_path / "fork" / "checkpoint.pt", weights_only=True)
    for rank in range(2):
        assert forked["archs"][rank]["position"] == ckpt["archs"][rank]["position"] + 1
        assert forked["images"][rank]["batch"] == ckpt["images"][rank]["batch"] + 1


def test_init_from_forks_a_run_and_resume_follows_new_milestones(tmp_path):
    _finish(_run([str(TRAIN), "--config", str(_config(tmp_path, "source", steps=2, ckpt_every=2))]))
    source = tmp_path / "source" / "checkpoint.pt"

    # A fork starts from the source's weights and Adam moments, with its own recipe.
    cfg = _config(tmp_path, "fork", steps=2, lr=3e-4, init_from=str(source))
    out = _finish(_run([str(TRAIN), "--config", str(cfg), "steps=1", "ckpt_every=1", "milestones=[]"]))
    assert "initialised from" in out
    fork = torch.load(tmp_path / "fork" / "checkpoint.pt", weights_only=True)
    src = torch.load(source, weights_only=True)
    assert fork["step"] == 1 and fork["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)
    moved = [k for k, v in src["meta_model"]["state_dict"].items() if not torch.equal(v, fork["meta_model"]["state_dict"][k])]
    assert moved, "the fork took no step"
    assert fork["stats"]["inherited_steps"] == 2  # its compute includes the source's
    assert fork["archs"][0]["position"] == src["archs"][0]["position"] + 1  # same data stream, continued
    assert fork["stats"]["archs_seen"] == src["stats"]["archs_seen"] + TINY["meta_batch"]
    state = next(iter(fork["optimizer"]["state"].values()))
    assert state["step"] == next(iter(src["optimizer"]["state"].values()))["step"] + 1  # moments carried over

    # Resuming with a longer run moves the lr milestones to the new length (0.5 * 4 = 2).
    _finish(_run([str(TRAIN), "--config", str(cfg), "steps=4", "ckpt_every=1", "milestones=[0.5]", "--resume"]))
    with open(tmp_path / "fork" / "log.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([3e-4, 3e-4, 3e-5, 3e-5])

    # The checkpoint records the recipe of every stage of the weights' lineage.
    stages = torch.load(tmp_path / "fork" / "checkpoint.pt", weights_only=True)["stages"]
    assert [(s["steps"], s["schedule_steps"], s["lr"], s["milestones"]) for s in stages] == [
        (2, 2, 1e-3, TINY["milestones"]), (4, 4, 3e-4, [0.5])]


def test_init_from_another_meta_model_is_a_clear_error_unless_only_wider(tmp_path):
    _finish(_run([str(TRAIN), "--config", str(_config(tmp_path, "source", steps=1, ckpt_every=1))]))
    cfg = _config(tmp_path, "fork", init_from=str(tmp_path / "source" / "final.pt"))
    for change in ("ghn.hid=12", "ghn.dec_hid=2", "ghn.max_shape=[8,8,3,3]"):  # not a multiple; smaller; another field
        proc = _run([str(TRAIN), "--config", str(cfg), change])
        out = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode != 0 and "holds a meta-model with another config" in out, out[-2000:]

    # Only hid, to a multiple, and dec_hid, larger: the source (a training checkpoint, whose
    # Adam moments do not fit the wider model) is widened and trained on with fresh moments.
    out = _finish(_run([str(TRAIN), "--config", str(cfg), "ghn.hid=16", "ghn.dec_hid=8", "steps=1", "ckpt_every=1",
                        f"init_from={tmp_path / 'source' / 'checkpoint.pt'}"]))
    assert "widened" in out and "fresh Adam moments" in out
    ckpt = torch.load(tmp_path / "fork" / "checkpoint.pt", weights_only=True)
    assert ckpt["meta_model"]["config"]["hid"] == 16 and ckpt["meta_model"]["config"]["dec_hid"] == 8
    assert ckpt["stats"]["inherited_steps"] == 1


def test_init_from_a_saved_meta_model_inherits_its_record_and_warms_up(tmp_path):
    from ghn import GHN, GHNConfig, hub

    torch.manual_seed(1)
    source = GHN(GHNConfig.from_dict(TINY["ghn"]))
    record = {"training": {"steps": 5, "stages": [{"steps": 5, "lr": 1e-3}]},
              "compute": {"step_hours": 0.5, "architectures_seen": 10, "images_seen": 80, "skipped_steps": 1}}
    hub.save_pretrained(source, tmp_path / "saved", metadata=record)

    cfg = _config(tmp_path, "warm", steps=4, ckpt_every=4, milestones=[0.75], warmup=2, seed=3, augment=False,
                  init_from=str(tmp_path / "saved"))
    out = _finish(_run([str(TRAIN), "--config", str(cfg)]))
    assert "fresh Adam moments" in out
    with open(tmp_path / "warm" / "log.csv") as f:  # ramp over 2 steps, then lr, then the milestone at step 3
        assert [float(r["lr"]) for r in csv.DictReader(f)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-4])
    ckpt = torch.load(tmp_path / "warm" / "checkpoint.pt", weights_only=True)
    stats = ckpt["stats"]
    assert stats["inherited_steps"] == 5 and stats["skipped"] == 1
    assert stats["archs_seen"] == 10 + 4 * TINY["meta_batch"] and stats["images_seen"] == 80 + 4 * TINY["batch_size"]
    assert stats["seconds"] > 0.5 * 3600
    assert [(s["steps"], s["lr"]) for s in ckpt["stages"]] == [(5, 1e-3), (4, 1e-3)]
    assert {k: ckpt["stages"][-1][k] for k in ("warmup", "seed", "augment")} == {"warmup": 2, "seed": 3, "augment": False}
    moved = [k for k, v in source.state_dict().items() if not torch.equal(v, ckpt["meta_model"]["state_dict"][k])]
    assert moved, "the run did not start from the saved weights or took no step"
    # The first step started from the saved weights: a run from scratch with the same seed differs.
    scratch = _config(tmp_path, "scratch", steps=4, ckpt_every=4, milestones=[0.75], warmup=2, seed=3)
    _finish(_run([str(TRAIN), "--config", str(scratch)]))
    other = torch.load(tmp_path / "scratch" / "checkpoint.pt", weights_only=True)["meta_model"]["state_dict"]
    assert any(not torch.equal(v, other[k]) for k, v in ckpt["meta_model"]["state_dict"].items())


@pytest.mark.parametrize("init_from, message", [
    ("no-such-model", "init_from: unknown meta-model 'no-such-model'"),
    ("ghn2-cifar10", "init_from: ghn2-cifar10 holds a meta-model with another config"),
])
def test_init_from_a_bad_saved_meta_model_is_a_clear_error(tmp_path, init_from, message):
    proc = _run([str(TRAIN), "--config", str(_config(tmp_path, "bad", init_from=init_from))])
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode != 0 and message in out, out[-2000:]
