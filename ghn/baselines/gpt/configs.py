"""Strict reading of config dataclasses from dicts (YAML files, overrides, saved files)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def check_keys(cls: type, d: Any, section: str = "") -> dict[str, Any]:
    """Return ``d`` as a dict if it is a mapping whose keys are all fields of dataclass ``cls``.

    ``None`` reads as an empty section (YAML's ``model:`` with nothing under it). Raises
    ValueError naming the unknown keys and listing the known ones, so that a typo fails
    instead of silently falling back to a default; ``section`` (e.g. ``"model.transformer"``)
    says where a nested section sits.
    """
    where = f" in section {section!r}" if section else ""
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ValueError(f"expected a mapping of {cls.__name__} fields{where}, got {d!r}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known), key=str)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}{where}; known keys: {known}")
    return dict(d)
