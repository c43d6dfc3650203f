"""YAML configs with ``key.sub=value`` command-line overrides, shared by the experiment scripts."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: ``["model.transformer.width=128", "steps=10"]``.

    Values are parsed as YAML (plus exponent notation), so ``3e-4``, ``true``, ``null`` and ``[a, b]`` work.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not key=value")
        *parents, leaf = key.strip().split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[leaf] = _parse(value)
    return cfg


def _parse(value: str):
    v = yaml.safe_load(value)
    return _parse_str(v) if isinstance(v, str) else v


def _parse_str(v: str):
    # PyYAML (YAML 1.1) reads exponent notation without a dot ("3e-4") as a string.
    return float(v) if _EXPONENT.fullmatch(v.strip()) else v


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """Read a YAML file (or start empty when ``path`` is None) and apply overrides."""
    cfg = yaml.safe_load(Path(path).read_text()) if path else {}
    return apply_overrides(_floats(cfg or {}), list(overrides))


def load_dataclass(cls: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    """Dataclass `cls` from a YAML file (None: its defaults) and overrides, refusing keys it
    does not have, so that a typo does not silently fall back to a default.

    Raises:
        ValueError: an override that does not parse, or a key `cls` does not have.
    """
    return from_mapping(cls, load_config(path, overrides))


def from_mapping(cls: type[T], d: Any, section: str = "") -> T:
    """Dataclass ``cls`` from a mapping such as parsed YAML or JSON metadata; missing keys
    take their defaults.

    Recurses into dataclass-typed fields (``section`` names where ``d`` sits, for messages:
    ``"model.transformer"``), reads ``null`` for a dict-typed field as an empty one, and
    lists for tuple-typed fields as tuples (YAML and JSON have no tuples).

    Raises:
        ValueError: ``d`` is not a mapping, or a key, here or in a nested section, is not a
            field (the message names the unknown keys and lists the known ones).
    """
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in _check_keys(cls, d, section).items():
        hint = hints[key]
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            value = from_mapping(hint, value, f"{section}.{key}" if section else key)
        elif origin is dict and value is None:
            value = {}
        elif origin is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _check_keys(cls: type, d: Any, section: str = "") -> dict[str, Any]:
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
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(known), key=str)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}{where}; known keys: {known}")
    return dict(d)


def _floats(node):
    """The same reading of exponent notation in files (``lr: 1e-3``), recursively."""
    if isinstance(node, dict):
        return {k: _floats(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_floats(v) for v in node]
    return _parse_str(node) if isinstance(node, str) else node


def add_config_arguments(parser: argparse.ArgumentParser, fields: str, bare: bool = False) -> None:
    """Give an entry point ``--config FILE`` and ``--set KEY=VALUE ...`` (dotted keys).

    ``fields`` names the dataclass whose fields the YAML file and the overrides set. With
    ``bare``, trailing ``KEY=VALUE`` arguments are accepted too (the GHN scripts took them
    before ``--set`` existed). Read the result with :func:`parsed_overrides`.
    """
    parser.add_argument("--config", default=None, help=f"YAML file with {fields} fields")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config fields (dotted keys)")
    if bare:
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the same as --set")


def parsed_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides parsed by a parser set up with :func:`add_config_arguments`, bare ones first."""
    return [*getattr(args, "overrides", []), *args.set]
