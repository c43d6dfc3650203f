"""Config files and key=value overrides, as every experiment script reads them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from ghn.overrides import add_config_arguments, from_mapping, load_config, load_dataclass, parsed_overrides


@dataclass
class Recipe:
    lr: float = 1e-3
    milestones: list[float] = field(default_factory=lambda: [0.5])
    out: str | None = None


@dataclass
class Optimiser:
    betas: tuple[float, float] = (0.9, 0.999)
    recipe: Recipe = field(default_factory=Recipe)


@dataclass
class Experiment:
    opt: Optimiser = field(default_factory=Optimiser)
    splits: dict[str, int] = field(default_factory=lambda: {"test": 8})
    seed: int = 0


def test_exponent_notation_is_a_number_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nopt: {wd: 5E-4, name: adam}\nmilestones: [1e2, 2.5e+2]\nout_dir: runs/1e3x\n")
    cfg = load_config(path, ["lr=2e-3", "opt.momentum=9e-1", "ghn.hid=64", "tag=3e"])
    assert cfg == {"lr": 2e-3, "opt": {"wd": 5e-4, "name": "adam", "momentum": 0.9}, "milestones": [100.0, 250.0],
                   "out_dir": "runs/1e3x", "ghn": {"hid": 64}, "tag": "3e"}


@pytest.mark.parametrize("item, message", [("lr", "is not key=value"), ("lr.x=1", "'lr' is not a section")])
def test_bad_overrides_name_the_item(tmp_path, item, message):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1.0e-3\n")
    with pytest.raises(ValueError, match=message):
        load_config(path, [item])


@pytest.mark.parametrize("bare", [False, True])
def test_command_line_overrides_reach_the_config(tmp_path, bare):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 10\nmodel: {width: 8}\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, "TrainConfig", bare=bare)
    argv = ["--config", str(path), "--set", "model.width=16", "lr=3e-4"]
    args = parser.parse_args((["steps=20"] if bare else []) + argv)
    cfg = load_config(args.config, parsed_overrides(args))
    assert cfg == {"steps": 20 if bare else 10, "model": {"width": 16}, "lr": 3e-4}
    if not bare:  # a stray KEY=VALUE without --set is refused rather than ignored
        with pytest.raises(SystemExit):
            parser.parse_args(["steps=20"])


def test_dataclass_from_a_file_and_overrides_refuses_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-3\n")
    assert load_dataclass(Recipe, path, ["milestones=[0.8,0.9]"]) == Recipe(lr=2e-3, milestones=[0.8, 0.9])
    assert load_dataclass(Recipe, None, ["out=runs/x"]) == Recipe(out="runs/x")  # no file: the defaults
    with pytest.raises(ValueError, match=r"unknown Recipe key\(s\) \['learning_rate'\]; known keys: \['lr', 'milestones', 'out'\]"):
        load_dataclass(Recipe, path, ["learning_rate=3"])


def test_nested_dataclasses_from_a_mapping():
    cfg = from_mapping(Experiment, {"opt": {"betas": [0.5, 0.9], "recipe": {"lr": 0.1}}, "splits": None})
    # YAML's lists become the tuples the field holds; a null dict section is an empty one.
    assert cfg == Experiment(opt=Optimiser(betas=(0.5, 0.9), recipe=Recipe(lr=0.1)), splits={})
    assert from_mapping(Experiment, {"opt": None}) == Experiment()  # "opt:" with nothing under it
    # A typo deep down is refused, naming the section it sits in.
    with pytest.raises(ValueError, match=r"unknown Recipe key\(s\) \['lr_'\] in section 'opt.recipe'"):
        from_mapping(Experiment, {"opt": {"recipe": {"lr_": 0.1}}})
    with pytest.raises(ValueError, match=r"expected a mapping of Optimiser fields in section 'opt', got 3"):
        from_mapping(Experiment, {"opt": 3})
