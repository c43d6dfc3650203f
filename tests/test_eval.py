"""The CIFAR-10 benchmark script (experiments/eval_ghn.py): end to end on a tiny config,
the missing-meta-model path, config overrides, and the equivalent-SGD-steps rule.

The end-to-end test uses a random-weight meta-model (about 10% accuracy, which is all a
test needs) and the shared CIFAR-10 copy every machine has at ../shared/data.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ghn import GHN, GHNConfig, hub

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("eval_ghn", ROOT / "experiments" / "eval_ghn.py")
eval_ghn = importlib.util.module_from_spec(_spec)
sys.modules["eval_ghn"] = eval_ghn  # dataclasses resolve their annotations through sys.modules
_spec.loader.exec_module(eval_ghn)

# Two of the cheapest test-split architectures (about 15 and 21 MFLOPs per image).
TINY = {
    "splits": {"test": [470, 285]},
    "torchvision": ["mobilenet_v2"],
    "test_images": 256,
    "sgd": {"models": ["test/470"], "max_steps": 4, "eval_every": 2},
    "finetune": {"model": "test/470", "steps": 2, "eval_every": 1},
    "threads": 1,
}


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("meta") / "random_ghn.pt"
    torch.manual_seed(0)
    torch.save(GHN(GHNConfig()).checkpoint(), path)
    return path


def _config(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "out_dir": str(tmp_path / "results"), **overrides}))
    return path


def test_end_to_end_writes_json_markdown_and_plot(tmp_path, random_checkpoint, capsys):
    code = eval_ghn.main(["--config", str(_config(tmp_path)), "--meta-model", str(random_checkpoint)])
    assert code == 0
    out = tmp_path / "results"
    results = json.loads((out / "bench_cifar.json").read_text())
    assert {"meta_model", "config", "machine", "wall_time_s", "summary", "networks", "sgd_equivalent",
            "finetune", "test_set", "dataset"} <= results.keys()
    assert results["cifar10_source"]["kind"] == "archive"  # the shared JPEG copy, which the tests read
    assert results["dataset"] == f"CIFAR-10 test (archive {Path(results['cifar10_source']['path']).name})"
    assert results["meta_model"]["source"] == str(random_checkpoint)
    assert len(results["meta_model"]["sha256"]) == 64
    assert results["test_set"]["images"] == 256
    assert results["methods"] == ["ghn", "random"]  # no baseline checkpoints given
    assert [n["name"] for n in results["networks"]] == ["test/470", "test/285", "mobilenet_v2"]
    for net in results["networks"]:
        assert "error" not in net, net
        assert set(net["acc"]) == {"ghn", "random"} and all(0 <= a <= 1 for a in net["acc"].values())
    assert results["summary"]["test"]["n"] == 2 and "mobilenet_v2" in results["summary"]
    (sgd,) = results["sgd_equivalent"]
    assert sgd["name"] == "test/470" and sgd["max_steps"] == 4
    assert sgd["steps"] == eval_ghn.equivalent_sgd_steps(sgd["curve"]["steps"], sgd["curve"]["acc"], sgd["ghn_acc"])
    ft = results["finetune"]
    assert ft["steps"] == 2 and ft["curves"]["ghn"]["steps"] == [0, 1, 2] == ft["curves"]["random"]["steps"]
    # Both fine-tuning runs start from the networks of the table.
    assert ft["curves"]["random"]["acc"][0] == results["networks"][0]["acc"]["random"]
    assert ft["curves"]["ghn"]["acc"][0] == pytest.approx(results["networks"][0]["acc"]["ghn"], abs=0.01)

    md = (out / "bench_cifar.md").read_text()
    assert "| Networks | GHN (this meta-model) | Random init |" in md
    assert "MLP-HN column not run" in md and "Equivalent SGD steps" in md and "Fine-tuning test/470" in md
    assert md in capsys.readouterr().out  # the table is printed at the end
    assert (out / "bench_cifar.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_baseline_checkpoint_is_skipped_with_a_note(tmp_path, random_checkpoint):
    cfg = eval_ghn.BenchConfig.load(_config(tmp_path), [
        f"meta_model={random_checkpoint}", f"baselines.ghn1={tmp_path / 'absent.pt'}", "splits={}",
        "torchvision=[]", "sgd.models=[]", "finetune.steps=0",
    ])
    results = eval_ghn.run(cfg)
    assert results["methods"] == ["ghn", "random"]
    assert "no checkpoint at" in results["baselines"]["ghn1"]["status"]
    assert any("GHN-1 column not run" in n for n in results["notes"])
    # finetune.steps=0 skips the stage rather than evaluating ResNet-18 twice at step 0.
    assert results["finetune"] is None and "Fine-tuning not run (finetune.steps=0)." in results["notes"]
    md = Path(results["outputs"]["md"]).read_text()
    assert "Fine-tuning not run" in md and "### Fine-tuning" not in md


def test_gpt_row_next_to_the_meta_models_and_a_note_when_absent(tmp_path, random_checkpoint):
    from ghn.baselines.gpt import CollectConfig, GPTConfig, collect, load_checkpoints
    from ghn.baselines.gpt.diffusion import DiffusionConfig
    from ghn.baselines.gpt.train import TrainConfig, train
    from ghn.baselines.gpt.transformer import TransformerConfig

    data = tmp_path / "gpt_data"
    collect(CollectConfig(num_runs=2, runs_per_shard=1, steps=10, num_checkpoints=3, batch_size=32, eval_subset=128,
                          train_subset=256, optimizers=("sgd",), workers=1, out_dir=str(data)))
    model = GPTConfig(chunk_size=64, transformer=TransformerConfig(width=128, depth=1, heads=2, fourier_dim=16),
                      diffusion=DiffusionConfig(num_steps=20))
    train(TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "gpt"), model=model, steps=2, batch_size=4,
                      warmup=1, ckpt_every=2))
    base = [f"meta_model={random_checkpoint}", f"baselines.ghn1={random_checkpoint}", "splits={}", "torchvision=[]",
            "sgd.models=[]", "finetune.steps=0", "test_images=128"]
    cfg = eval_ghn.BenchConfig.load(_config(tmp_path), [
        *base, f"gpt.model={tmp_path / 'gpt' / 'ema.safetensors'}", f"gpt.data={data}", "gpt.inits=3",
        "gpt.ddim_steps=2"])
    results = eval_ghn.run(cfg)
    assert results["methods"] == ["ghn", "random", "ghn1", "gpt"]
    (row,) = results["networks"]
    assert row["name"] == "tiny_cnn" and set(row["acc"]) == {"ghn", "random", "ghn1", "gpt"}
    assert len(row["random_per_init"]) == len(row["gpt_per_init"]) == 3
    assert row["acc"]["gpt"] == pytest.approx(sum(row["gpt_per_init"]) / 3)
    assert row["gpt"]["prompt_loss"] == pytest.approx(load_checkpoints(data).test_loss.min().item())
    assert all(0 <= a <= 1 for a in row["acc"].values())
    md = (tmp_path / "results" / "bench_cifar.md").read_text()
    assert "| G.pt's tiny CNN (5,370 parameters) |" in md and "| G.pt (one step) |" in md

    results = eval_ghn.run(eval_ghn.BenchConfig.load(_config(tmp_path), [*base, f"gpt.model={tmp_path / 'absent'}", f"gpt.data={data}"]))
    assert results["networks"] == [] and "gpt" not in results["methods"]
    assert any(n.startswith(f"G.pt row not run: {tmp_path / 'absent'} not found") for n in results["notes"])

    # A G.pt that cannot be loaded costs its row only: the stages after it still run.
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    results = eval_ghn.run(eval_ghn.BenchConfig.load(_config(tmp_path), [*base, f"gpt.model={tmp_path / 'broken.safetensors'}", f"gpt.data={data}"]))
    assert "gpt" not in results["methods"] and "finetune" in results
    assert any(n.startswith("G.pt row failed: ") for n in results["notes"])


def test_default_meta_model_missing_gives_the_documented_error(tmp_path, monkeypatch, caplog):
    # Whatever ships in the registry, the default name resolves to nothing here.
    monkeypatch.setattr(hub, "_read_registry", lambda: {})
    with caplog.at_level(logging.ERROR):
        code = eval_ghn.main(["--config", str(_config(tmp_path))])
    assert code == eval_ghn.EXIT_NO_INPUT == 2
    assert "is missing from this installation" in caplog.text and "--meta-model PATH" in caplog.text
    assert not (tmp_path / "results").exists()  # nothing faked, nothing written


def test_missing_checkpoint_path_fails_before_any_work(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        code = eval_ghn.main(["--config", str(_config(tmp_path)), "--meta-model", str(tmp_path / "nope.pt")])
    assert code == 2 and f"no checkpoint at {tmp_path / 'nope.pt'}" in caplog.text
    assert not (tmp_path / "results").exists()


def test_set_overrides_reach_the_config_as_bare_ones_do(tmp_path, caplog, capsys):
    for override in (["--set", f"meta_model={tmp_path / 'nope.pt'}"], [f"meta_model={tmp_path / 'nope.pt'}"]):
        with caplog.at_level(logging.ERROR):
            code = eval_ghn.main(["--config", str(_config(tmp_path)), *override])
        assert code == 2 and f"no checkpoint at {tmp_path / 'nope.pt'}" in caplog.text
        caplog.clear()
    with pytest.raises(SystemExit):
        eval_ghn.main(["--config", str(_config(tmp_path)), "--set", "nosuchkey=1"])
    assert "nosuchkey" in capsys.readouterr().err


def test_training_checkpoint_and_bare_checkpoint_both_load(tmp_path):
    torch.manual_seed(0)
    meta = GHN(GHNConfig(hid=8, dec_hid=4, max_shape=(8, 8, 3, 3)))
    torch.save(meta.checkpoint(), tmp_path / "final.pt")
    torch.save({"meta_model": meta.checkpoint(), "step": 7, "stats": {"archs_seen": 28}}, tmp_path / "checkpoint.pt")
    for name, kind in (("final.pt", "checkpoint"), ("checkpoint.pt", "training checkpoint")):
        loaded, identity = eval_ghn.load_meta_model(str(tmp_path / name), torch.device("cpu"))
        assert identity["kind"] == kind and identity["config"]["hid"] == 8
        for a, b in zip(loaded.state_dict().values(), meta.state_dict().values()):
            assert torch.equal(a, b)
    assert identity["step"] == 7 and identity["stats"] == {"archs_seen": 28}
    # The same reader behind ghn.from_pretrained: a training checkpoint loads there too.
    via_hub = hub.from_pretrained(tmp_path / "checkpoint.pt")
    assert all(torch.equal(a, b) for a, b in zip(via_hub.state_dict().values(), meta.state_dict().values()))
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(eval_ghn.MetaModelUnavailableError, match="is not a GHN checkpoint"):
        eval_ghn.load_meta_model(str(tmp_path / "other.pt"), torch.device("cpu"))


@pytest.mark.parametrize(
    ("accs", "target", "expected"),
    [
        ([0.10, 0.20, 0.35, 0.50], 0.30, 20),  # first evaluation at or above the target
        ([0.10, 0.20, 0.35, 0.50], 0.35, 20),  # reaching exactly counts
        ([0.10, 0.20, 0.35, 0.50], 0.05, 0),  # random init already as good
        ([0.10, 0.40, 0.30, 0.50], 0.35, 10),  # later dips do not matter
        ([0.10, 0.20, 0.35, 0.50], 0.60, None),  # never within the budget
    ],
)
def test_equivalent_sgd_steps(accs, target, expected):
    assert eval_ghn.equivalent_sgd_steps([0, 10, 20, 30], accs, target) == expected


def test_equivalent_sgd_steps_rejects_malformed_curves():
    with pytest.raises(ValueError, match="accuracies"):
        eval_ghn.equivalent_sgd_steps([0, 10], [0.1], 0.5)
    with pytest.raises(ValueError, match="increasing"):
        eval_ghn.equivalent_sgd_steps([0, 10, 10], [0.1, 0.2, 0.3], 0.5)


def test_config_overrides_and_validation(tmp_path):
    cfg = eval_ghn.BenchConfig.load(_config(tmp_path), ["sgd.max_steps=9", "splits.wide=3", "torchvision=[resnet18]"])
    assert cfg.sgd.max_steps == 9 and cfg.sgd.eval_every == 2  # the rest of the section kept
    assert cfg.splits == {"test": [470, 285], "wide": 3} and cfg.torchvision == ["resnet18"]
    for bad, message in [("sgd.max_stpes=9", "max_stpes"), ("nosuchkey=1", "nosuchkey"),
                         ("splits.nosplit=2", "nosplit"), ("test_images=0", "test_images must be in 1..10000"),
                         ("noequals", "noequals"), ("finetune.eval_every=0", "finetune.eval_every must be at least 1, got 0"),
                         ("gpt.inits=0", "gpt.inits must be at least 1, got 0"),
                         ("finetune.steps=-1", "finetune.steps must be at least 0 (0 skips fine-tuning) or null, got -1")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            eval_ghn.BenchConfig.load(_config(tmp_path), [bad])


def test_shipped_configs_load():
    for name in ("bench_cifar_quick.yaml", "bench_cifar.yaml"):
        cfg = eval_ghn.BenchConfig.load(ROOT / "experiments" / "configs" / name)
        assert cfg.finetune.model == "resnet18"
        assert {"resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "convnext_tiny"} <= set(
            cfg.torchvision
        )
        assert set(cfg.splits) == {"test", "wide", "deep", "dense", "bnfree"}
    full = eval_ghn.BenchConfig.load(ROOT / "experiments" / "configs" / "bench_cifar.yaml")
    assert full.splits["test"] is None and full.test_images is None and full.finetune.steps is None


def test_architecture_sample_is_seeded_and_per_split():
    a = eval_ghn.sample_indices(500, 5, seed=0, split="test")
    assert a == eval_ghn.sample_indices(500, 5, seed=0, split="test") == sorted(a) and len(set(a)) == 5
    assert a != eval_ghn.sample_indices(500, 5, seed=1, split="test")
    assert eval_ghn.sample_indices(100, None, 0, "wide") == list(range(100))
    assert eval_ghn.sample_indices(100, [3, 1], 0, "wide") == [3, 1]
    with pytest.raises(ValueError):
        eval_ghn.sample_indices(100, [100], 0, "wide")


def test_benchmark_networks_parse_and_build():
    resnet = eval_ghn.Network.parse("resnet18")
    assert resnet.adaptation.startswith("3x3 stride-1 stem conv")
    assert resnet.build(seed=0).conv1.kernel_size == (3, 3)  # built through ghn.cifar_model
    with pytest.raises(ValueError, match="not a torchvision classification model.*named '<split>/<index>'"):
        eval_ghn.Network.parse("not_a_model")
    with pytest.raises(ValueError, match=re.escape("split 'test' has 500 architectures (0..499)")):
        eval_ghn.Network.parse("test/500")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_export_ships_a_benchmarked_checkpoint_into_a_registry(tmp_path, monkeypatch):
    export = _load_script("export_pretrained")
    torch.manual_seed(0)
    meta = GHN(GHNConfig(hid=8, dec_hid=4, max_shape=(8, 8, 3, 3)))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"meta_model": meta.checkpoint(), "step": 7,
                "stats": {"archs_seen": 28, "images_seen": 224, "seconds": 36.0, "skipped": 0},
                "train_config": {"narrow": True, "meta_batch": 4, "batch_size": 32, "lr": 1e-3},
                "stages": [{"steps": 5, "lr": 2e-3}, {"steps": 2, "lr": 1e-3}]}, ckpt)
    cfg = eval_ghn.BenchConfig.load(_config(tmp_path), [
        f"meta_model={ckpt}", "splits={test: [470]}", "sgd.models=[]", "finetune.steps=0"])
    bench = eval_ghn.run(cfg)
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    # A second measurement on more test images, of two test-split networks and no torchvision model.
    more = eval_ghn.run(eval_ghn.BenchConfig.load(_config(tmp_path), [
        f"meta_model={ckpt}", "splits={test: [470, 285]}", "torchvision=[]", "test_images=512", "sgd.models=[]",
        "finetune.steps=0", "name=more"]))
    (tmp_path / "more.json").write_text(json.dumps(more))
    registry = tmp_path / "pretrained"
    registry.mkdir()
    (registry / "registry.yaml").write_text("# header kept\nmodels: []\n")

    for description in ("first", "second"):  # exporting again replaces the entry
        args = [str(ckpt), "--name", "tiny", "--description", description, "--bench", str(tmp_path / "bench.json"),
                "--bench", str(tmp_path / "more.json"), "--registry-dir", str(registry)]
        assert export.main(args) == 0
    assert (registry / "registry.yaml").read_text().startswith("# header kept\nmodels:")
    monkeypatch.setattr(hub, "PRETRAINED_DIR", registry)
    (entry,) = hub.list_models()
    assert entry.name == "tiny" and entry.description == "second"
    # Each figure from the measurement on the most test images, which config.json names.
    assert entry.accuracy["cifar10/deepnets-test"] == round(100 * more["summary"]["test"]["ghn"]["mean"], 1)
    loaded = hub.from_pretrained("tiny")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), meta.state_dict().values()))
    info = hub.load_info("tiny")
    assert info.metadata.compute == {"step_hours": 0.01, "architectures_seen": 28, "images_seen": 224,
                                     "skipped_steps": 0}
    assert info.metadata.training == {"steps": 7, "stages": [{"steps": 5, "lr": 2e-3}, {"steps": 2, "lr": 1e-3}]}
    assert info.metadata.dataset == "DeepNets-1M train (narrow) / CIFAR-10"  # stages without the flag: the config's
    mixed = {"stages": [{"steps": 5, "narrow": True}, {"steps": 2, "narrow": False}], "train_config": {"narrow": False}}
    assert export.metadata(mixed, {}, {})["dataset"] == "DeepNets-1M train (narrow and published; see training.stages) / CIFAR-10"
    assert info.metadata.accuracy["cifar10/mobilenet_v2"] == round(100 * bench["networks"][1]["acc"]["ghn"], 1)
    assert info.metadata.evaluation == {
        "cifar10/deepnets-test": "mean over 2 architectures of the DeepNets test split, a seeded subset of 512 test images",
        "cifar10/mobilenet_v2": "a seeded subset of 256 test images"}
    assert sorted(info.metadata.accuracy) == ["cifar10/deepnets-test", "cifar10/mobilenet_v2"]
    assert export.main([str(tmp_path / "absent.pt"), "--description", "x", "--registry-dir", str(registry)]) == 2
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert export.main([str(tmp_path / "garbage.pt"), "--description", "x", "--registry-dir", str(registry)]) == 2

    # Accuracies measured on other weights are not shipped unless forced.
    other = {**bench, "meta_model": {**bench["meta_model"], "sha256": "0" * 64}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    args = [str(ckpt), "--name", "tiny", "--description", "third", "--bench", str(tmp_path / "other.json"),
            "--registry-dir", str(registry)]
    assert export.main(args) == 2 and hub.list_models()[0].description == "second"
    assert export.main([*args, "--force"]) == 0 and hub.list_models()[0].description == "third"


def test_machine_description_without_a_load_average(monkeypatch):
    """Windows has no os.getloadavg: the machine record says None and the table 'unknown'."""
    from ghn.machine import machine

    monkeypatch.delattr("os.getloadavg")
    assert machine()["load_average_1min"] is None
    assert eval_ghn._threads(None) is None  # no load to judge by: torch's default
    assert eval_ghn._load(None) == "unknown" and eval_ghn._load(1.25) == "1.2"


def _bench(tmp_path: Path, checkpoint: Path, name: str, **overrides) -> Path:
    """A real eval_ghn.py result of `checkpoint` on two tiny test-split networks."""
    cfg = _config(tmp_path, name=name, **{"torchvision": [], "sgd": {"models": []}, "finetune": {"steps": 0},
                                          "test_images": 64, **overrides})
    assert eval_ghn.main(["--config", str(cfg), "--meta-model", str(checkpoint)]) == 0
    return tmp_path / "results" / f"{name}.json"


def test_compare_bench_pairs_networks_and_refuses_other_test_images(tmp_path, random_checkpoint, capsys):
    compare_bench = _load_script("compare_bench")
    other_checkpoint = tmp_path / "other.pt"
    torch.manual_seed(1)
    torch.save(GHN(GHNConfig()).checkpoint(), other_checkpoint)
    ref = _bench(tmp_path, random_checkpoint, "ref")
    other = _bench(tmp_path, other_checkpoint, "other", splits={"test": [470, 285], "wide": [0]})
    out = tmp_path / "cmp"
    assert compare_bench.main(["--set", f"results=[{ref},{other},{ref}]", f"out={out}"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    acc = {p: {r["name"]: 100 * r["acc"]["ghn"] for r in json.loads(p.read_text())["networks"]} for p in (ref, other)}
    diffs = [acc[other][n] - acc[ref][n] for n in ("test/470", "test/285")]
    (row,) = report["comparisons"][0]["rows"]  # only the test split is in both
    assert row["group"] == "test" and row["networks"] == 2
    assert row["diff"] == pytest.approx(sum(diffs) / 2)
    assert row["se"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2)  # stdev of two values / sqrt(2)
    assert row["ahead"] == sum(d > 0 for d in diffs)
    assert report["comparisons"][0]["left_out"] == ["wide/0"]
    (itself,) = report["comparisons"][1]["rows"]
    assert itself["diff"] == 0 and itself["se"] == 0 and itself["ahead"] == 0
    assert out.with_suffix(".md").read_text() in capsys.readouterr().out

    fewer_images = _bench(tmp_path, other_checkpoint, "fewer", test_images=128)
    with pytest.raises(SystemExit) as e:
        compare_bench.main(["--set", f"results=[{ref},{fewer_images}]"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(fewer_images) in err and "not the same test images" in err
