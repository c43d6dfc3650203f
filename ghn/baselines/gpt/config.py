"""YAML configs with ``key.sub=value`` command-line overrides, for the experiment scripts."""

from __future__ import annotations

from pathlib import Path

import yaml


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: ``["model.transformer.width=128", "steps=10"]``.

    Values are parsed as YAML (plus plain floats), so ``3e-4``, ``true``, ``null`` and ``[a, b]`` work.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        *parents, leaf = key.strip().split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _parse(value)
    return cfg


def _parse(value: str):
    v = yaml.safe_load(value)
    if isinstance(v, str):  # PyYAML reads "3e-4" (no dot) as a string
        try:
            return float(v)
        except ValueError:
            pass
    return v


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """Read a YAML file (or start empty when ``path`` is None) and apply overrides."""
    cfg = yaml.safe_load(Path(path).read_text()) if path else {}
    return apply_overrides(cfg or {}, list(overrides))
