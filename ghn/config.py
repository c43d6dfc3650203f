"""The meta-model's configuration: one dataclass that round-trips through YAML and checkpoints."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ghn.overrides import from_mapping

MESSAGE_PASSING = ("gatedgnn", "mlp")
S_MAX_LIMIT = 254  # graph.virtual_edges stores path lengths as uint8 (255 marks "unreachable")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class GHNConfig:
    """Architecture of a graph hypernetwork.

    Attributes:
        hid: node-state size ``d`` (GHN-2 on CIFAR-10: 32).
        max_shape: ``(C_out, C_in, k_h, k_w)`` of the largest block the weight decoder
            produces; real tensors are sliced from it or tiled with it.
        num_classes: classes of the classifier head it was trained for.
        message_passing: ``"gatedgnn"`` (GHN-1/2) or ``"mlp"`` (the MLP-hypernetwork
            baseline: node states from an MLP, no message passing).
        virtual_edges: messages over shortest-path virtual edges (GHN-2).
        s_max: longest path that gets a virtual edge, 0 to 254 (below 2: none).
        layernorm: layer norm of the final node states (GHN-2).
        weight_norm: GHN-2 parameter normalisation of predicted tensors.
        dec_hid: channels of the decoder's spatial features (the 1x1 conv input).
        input_shape: example input (without batch) used to build graphs of user models.
    """

    hid: int = 32
    max_shape: tuple[int, int, int, int] = (64, 64, 11, 11)
    num_classes: int = 10
    message_passing: str = "gatedgnn"
    virtual_edges: bool = True
    s_max: int = 50
    layernorm: bool = True
    weight_norm: bool = True
    dec_hid: int = 32
    input_shape: tuple[int, ...] = (3, 32, 32)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata, not architecture

    def __post_init__(self) -> None:
        self.max_shape = tuple(int(s) for s in self.max_shape)
        self.input_shape = tuple(int(s) for s in self.input_shape)
        if self.message_passing not in MESSAGE_PASSING:
            raise ValueError(f"message_passing must be one of {MESSAGE_PASSING}, got {self.message_passing!r}")
        if len(self.max_shape) != 4 or min(self.max_shape) < 1:
            raise ValueError(f"max_shape must be 4 positive sizes (C_out, C_in, k_h, k_w), got {self.max_shape}")
        for name in ("hid", "dec_hid", "num_classes"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not _is_int(self.s_max) or not 0 <= self.s_max <= S_MAX_LIMIT:
            raise ValueError(
                f"s_max must be an int from 0 to {S_MAX_LIMIT} (below 2 gives no virtual edges), got {self.s_max!r}"
            )

    @classmethod
    def variant(cls, name: str, **overrides: Any) -> GHNConfig:
        """Named variants: ``"ghn2"`` (everything on), ``"ghn1"`` (gated GNN without
        virtual edges, layer norm or parameter normalisation), ``"mlp"`` (MLP hypernetwork)."""
        presets = {
            "ghn2": {},
            "ghn1": {"virtual_edges": False, "layernorm": False, "weight_norm": False},
            "mlp": {"message_passing": "mlp", "virtual_edges": False},
        }
        if name not in presets:
            raise ValueError(f"unknown variant {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["max_shape"], d["input_shape"] = list(self.max_shape), list(self.input_shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GHNConfig:
        """Build from field name -> value (what `to_dict` returns); unknown names are errors."""
        if not isinstance(d, Mapping):
            raise TypeError(f"GHNConfig.from_dict expects a mapping of field names to values, got {type(d).__name__}")
        return from_mapping(cls, d)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """The config as YAML text, also written to `path` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | os.PathLike) -> GHNConfig:
        """Read a config from a YAML file or from YAML text (what `to_yaml` returns).

        A `str` holding a newline or ``": "``, or starting with ``{``, is YAML text; any
        other `str`, and every `os.PathLike`, is a file path.

        Raises:
            FileNotFoundError: the path names no file.
        """
        if isinstance(path_or_text, str) and (
            "\n" in path_or_text or ": " in path_or_text or path_or_text.lstrip().startswith("{")
        ):
            text = path_or_text
        else:
            path = Path(path_or_text)
            if not path.is_file():
                raise FileNotFoundError(
                    f"GHNConfig.from_yaml: no config file {str(path)!r}; check the path, or pass YAML text "
                    "(e.g. GHNConfig().to_yaml())"
                )
            text = path.read_text()
        return cls.from_dict(yaml.safe_load(text) or {})
