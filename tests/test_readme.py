"""The README's Python example runs as written, so the documented API cannot drift from it."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision

import ghn
from ghn import GHN, GHNConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "a new Python example in the README needs a test of its own"
    code = blocks[0]
    # The example's placeholder path becomes a real save_pretrained directory.
    assert '"path/to/meta-model"' in code
    torch.manual_seed(0)
    GHN(GHNConfig(hid=8, dec_hid=8, max_shape=(16, 16, 3, 3))).save_pretrained(tmp_path / "meta")
    scope: dict = {}
    exec(compile(code.replace('"path/to/meta-model"', repr(str(tmp_path / "meta"))), str(README), "exec"), scope)

    model = scope["model"]  # the last one: ResNet-18 from the saved meta-model
    assert type(model).__name__ == "ResNet" and model.fc.out_features == 10
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # Its parameters are the meta-model's prediction, not torchvision's initialisation.
    again = ghn.predict(torchvision.models.resnet18(num_classes=10), scope["meta"])
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name
