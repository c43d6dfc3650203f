"""The meta-model shipped inside the package: registered, verified, offline, and trained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

import ghn
from deepnets import get_split
from ghn import hub
from ghn.data import cifar10_loader

ROOT = Path(__file__).resolve().parents[1]


def test_default_meta_model_is_registered_with_its_measurements():
    entry = {m.name: m for m in hub.list_models()}[hub.DEFAULT_MODEL]
    weights = entry.directory / entry.weights
    assert weights.stat().st_size == entry.size < 20_000_000  # "a few MB" inside the package
    assert hub.sha256_file(weights) == entry.sha256
    info = hub.load_info(hub.DEFAULT_MODEL)
    assert info.metadata.compute["architectures_seen"] > 0 and info.metadata.compute["images_seen"] > 0
    assert {"cifar10/deepnets-test", "cifar10/resnet18"} <= info.metadata.accuracy.keys()
    # Every shipped figure says how it was measured; the registry's summary is the config's.
    assert info.metadata.evaluation.keys() == info.metadata.accuracy.keys()
    assert info.metadata.evaluation["cifar10/resnet18"] == "all 10,000 test images"
    assert entry.accuracy.items() <= info.metadata.accuracy.items()


def test_predict_without_a_meta_model_works_offline(tmp_path):
    # A fresh interpreter with the hub unreachable and offline mode on: the default
    # meta-model must come from the package itself.
    code = (
        "import torch, torchvision, ghn\n"
        "m = torchvision.models.resnet18(num_classes=10)\n"
        "for p in m.parameters(): torch.nn.init.constant_(p, float('nan'))\n"
        "ghn.predict(m)\n"
        "assert all(torch.isfinite(p).all() for p in m.parameters())\n"
        "print('ok', sum(p.numel() for p in m.parameters()))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("ok 11")  # ResNet-18 for 10 classes: 11.2M parameters, all predicted
    assert not any(tmp_path.rglob("*.safetensors"))  # nothing downloaded or cached


@torch.no_grad()
def _accuracy(model: torch.nn.Module, images) -> float:
    ghn.use_batch_stats(model).eval()
    correct = sum((model(x).argmax(1) == y).sum().item() for x, y in images)
    return correct / sum(len(y) for _, y in images)


def test_shipped_meta_model_predicts_better_than_random_on_cifar10():
    """Real CIFAR-10 test images (a seeded stratified 512), no gradient step: the shipped
    model must be clearly trained, on its own distribution and on ResNet-18."""
    torch.manual_seed(0)
    meta = ghn.from_pretrained(hub.DEFAULT_MODEL)
    images = list(cifar10_loader("test", batch_size=64, subset=512))
    split = get_split("test")
    resnet18 = torchvision.models.resnet18(num_classes=10)
    resnet18.conv1 = torch.nn.Conv2d(3, 64, 3, padding=1, bias=False)  # the CIFAR stem, as in the benchmark
    resnet18.maxpool = torch.nn.Identity()
    nets = {"test/470": split[470].build(), "test/285": split[285].build(), "resnet18": resnet18}
    acc = {}
    for name, net in nets.items():
        random_acc = _accuracy(net, images)
        acc[name] = (_accuracy(ghn.predict(net, meta), images), random_acc)
    summary = json.dumps(acc)
    assert all(p > r + 0.05 and p > 0.15 for p, r in acc.values()), summary
