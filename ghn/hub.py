"""Pretrained meta-models: the registry of shipped ones, loading from anywhere, saving and sharing.

    meta = ghn.from_pretrained("ghn2-cifar10")                # shipped inside the package
    meta = ghn.from_pretrained("runs/ghn2")                   # a directory written by save_pretrained
    meta = ghn.from_pretrained("org/repo", revision="v1.0")   # a model-hub repository, cached
    save_pretrained(meta, "runs/ghn2", metadata={"dataset": "CIFAR-10", "accuracy": {...}})
    push_to_hub(meta, "org/repo", metadata=...)

Name resolution in `from_pretrained(name_or_path)`, first match wins:

1. an existing local path: a directory holding ``model.safetensors`` and a config
   (``config.json``, else ``config.yaml``/``config.yml``), a ``.safetensors`` file with such
   a config beside it, or a ``.pt``/``.pth`` checkpoint (``GHN.checkpoint()``'s dict, or a
   training checkpoint of ``experiments/train_ghn.py`` holding it under ``"meta_model"``;
   `load_checkpoint` also returns what the latter records of its run);
2. a registered name (``ghn/pretrained/registry.yaml``, listed by `list_models` and
   ``ghn models``); registered names never contain ``/``;
3. a model-hub repository id ``"org/repo"`` (exactly one ``/``), optionally
   ``"org/repo:path/in/repo.safetensors"`` (or a ``.pt`` file) to pick the weights file;
   the config is read from ``config.json`` next to the weights. Downloads go through
   `huggingface_hub.hf_hub_download`, so ``HF_HOME``/``HF_HUB_CACHE``, ``HF_ENDPOINT``,
   ``HF_HUB_OFFLINE`` and tokens work as in every hub library (read by huggingface_hub
   itself). A branch or tag is re-validated with one ``HEAD`` per file and nothing is
   downloaded again when unchanged; a commit-hash `revision` that is cached, and offline
   mode, make no request at all;
4. anything else raises `UnknownModelError`.

On-disk format (`FORMAT_VERSION` 1): ``model.safetensors`` (the state dict) and
``config.json``::

    {"format_version": 1, "ghn_version": "0.1.0",
     "config": {...GHNConfig...},
     "metadata": {"dataset": ..., "num_classes": ..., "training": {...}, "compute": {...},
                  "accuracy": {...}},
     "weights": {"file": "model.safetensors", "sha256": "...", "size": 123}}

A config without ``format_version`` is read as bare `GHNConfig` fields (what
`GHNConfig.to_yaml` writes). Weights are never unpickled: safetensors, or a legacy
checkpoint through ``torch.load(weights_only=True)``. Every failure raises a subclass of
`MetaModelError` whose message says what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import safetensors
import torch
import yaml
from safetensors.torch import load_file, save_file

from ghn.atomic import atomic_write
from ghn.config import GHNConfig
from ghn.model import GHN
from ghn.overrides import from_mapping

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ghn2-cifar10"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CONFIG_NAMES = (CONFIG_NAME, "config.yaml", "config.yml")  # search order in a directory
LEGACY_SUFFIXES = (".pt", ".pth")
PRETRAINED_DIR = Path(__file__).parent / "pretrained"  # <name>/ folders and registry.yaml
REGISTRY_NAME = "registry.yaml"

# Hub ids as huggingface_hub accepts them (letters, digits, "-", "_", "."), namespace required
# so that a bare word is always a registered name and never a hub lookup.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORMS = (
    "a local directory or file saved with ghn.hub.save_pretrained (model.safetensors + config.json), "
    "a legacy .pt checkpoint, a registered name (see `ghn models`), "
    "or a model-hub repository id 'org/repo' / 'org/repo:file.safetensors'"
)


# -- errors ---------------------------------------------------------------------------------


class MetaModelError(Exception):
    """Base class of every error raised while resolving, verifying or loading a meta-model."""


class UnknownModelError(MetaModelError, LookupError):
    """The name is no local path, no registered name and no repository on the hub."""


class ModelNotShippedError(UnknownModelError):
    """The default meta-model is missing from the installed package's registry: the install
    is broken or lacks its package data (the name is kept for callers that catch it)."""


class RevisionNotApplicableError(MetaModelError, ValueError):
    """`revision=` was given for a local path or a registered name; it only applies to hub
    repositories."""


class MissingFileError(MetaModelError, FileNotFoundError):
    """A file the meta-model needs (config or weights) is absent."""


class CorruptWeightsError(MetaModelError, ValueError):
    """The weights file is truncated, unreadable or not a plain weights file."""


class ChecksumMismatchError(MetaModelError, ValueError):
    """The weights file's sha256 differs from the registered or recorded one."""


class InvalidConfigError(MetaModelError, ValueError):
    """The config file cannot be read as a meta-model configuration."""


class UnsupportedFormatError(InvalidConfigError):
    """The config was written by a newer version of the package (higher ``format_version``)."""


class ConfigMismatchError(InvalidConfigError):
    """The config describes a meta-model whose parameter shapes disagree with the weights."""


class HubUnavailableError(MetaModelError, ConnectionError):
    """The hub could not be reached (or is disabled offline) and the files are not cached,
    or a download failed part-way."""


# -- metadata and registry ------------------------------------------------------------------


@dataclass
class Metadata:
    """What a saved meta-model was trained on, how, and how well it does.

    Attributes:
        dataset: training data, e.g. ``"DeepNets-1M train / CIFAR-10"``.
        num_classes: classes of the classifier head it predicts (defaults to the config's).
        training: the recipe, e.g. ``{"epochs": 300, "meta_batch": 8, "lr": 1e-3, "seed": 0}``.
        compute: what training cost, e.g. ``{"device": "1x A100", "hours": 20}``.
        accuracy: measured results, metric name -> value, e.g. ``{"resnet50/top1": 58.6}``.
        evaluation: how each accuracy was measured, metric name -> protocol, e.g.
            ``{"cifar10/resnet18": "all 10,000 test images"}``.
    """

    dataset: str | None = None
    num_classes: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metadata:
        """From a saved model's metadata; unknown names are errors (ValueError naming them)."""
        return from_mapping(cls, d)


@dataclass(frozen=True)
class RegisteredModel:
    """One meta-model shipped in ``ghn/pretrained/<name>/`` (an entry of ``registry.yaml``).

    Attributes:
        name: the short name users pass to `from_pretrained` (no ``/``).
        description: one line for ``ghn models``.
        sha256: hex digest of the weights file, verified on every load.
        size: bytes of the weights file.
        accuracy: summary of measured results, metric name -> value.
        weights, config: file names relative to ``ghn/pretrained/<name>/``.
    """

    name: str
    description: str
    sha256: str
    size: int
    accuracy: dict[str, float] = field(default_factory=dict)
    weights: str = WEIGHTS_NAME
    config: str = CONFIG_NAME

    @property
    def directory(self) -> Path:
        return PRETRAINED_DIR / self.name


@dataclass
class PretrainedInfo:
    """The contents of a meta-model's config file (see `load_info`).

    ``format_version`` is 0 for a bare `GHNConfig` file; ``sha256``/``size`` describe the
    weights the config was saved with (None when not recorded)."""

    config: GHNConfig
    metadata: Metadata
    format_version: int
    sha256: str | None = None
    size: int | None = None


def _read_registry() -> dict[str, RegisteredModel]:
    """Parse ``registry.yaml``; strict, because it is our own data and a typo must fail loudly."""
    path = PRETRAINED_DIR / REGISTRY_NAME
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    entries: dict[str, RegisteredModel] = {}
    for raw in doc.get("models") or []:
        try:
            entry = RegisteredModel(**raw)
        except TypeError as e:
            raise ValueError(f"{path}: bad entry {raw!r}: {e}") from e
        if "/" in entry.name or entry.name in entries:
            raise ValueError(f"{path}: registry names must be unique and contain no '/', got {entry.name!r}")
        if not _SHA256.fullmatch(entry.sha256) or entry.size <= 0:
            raise ValueError(f"{path}: {entry.name!r} needs a lowercase hex sha256 and a positive size")
        entries[entry.name] = entry
    return entries


def list_models() -> list[RegisteredModel]:
    """The meta-models shipped with the package, sorted by name."""
    return sorted(_read_registry().values(), key=lambda e: e.name)


# -- locating files -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    """Where a meta-model's files are. `weights` is a callable so that hub weights are only
    downloaded once the config has been checked (a newer format fails without the download)."""

    label: str  # where it came from, for messages and logs
    config: Path | None  # None: a legacy checkpoint carries its own config
    weights: Callable[[], Path]
    remedy: str  # what to do when the weights turn out to be damaged
    sha256: str | None = None  # registry-pinned; takes precedence over the config's record
    size: int | None = None


def _config_beside(folder: Path) -> Path | None:
    return next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), None)


def _locate_path(path: Path) -> _Located:
    remedy = f"copy {path} again, or re-save the meta-model with ghn.hub.save_pretrained"
    if path.is_dir():
        weights, config = path / WEIGHTS_NAME, _config_beside(path)
        if not weights.is_file() or config is None:
            raise MissingFileError(
                f"{path} is not a saved meta-model: it needs {WEIGHTS_NAME} and one of {list(CONFIG_NAMES)} "
                "(write both with ghn.hub.save_pretrained)"
            )
        return _Located(f"local directory {path}", config, lambda: weights, remedy)
    if path.suffix in LEGACY_SUFFIXES:
        return _Located(f"legacy checkpoint {path}", None, lambda: path, remedy)
    if path.suffix == ".safetensors":
        config = _config_beside(path.parent)
        if config is None:
            raise MissingFileError(
                f"{path} has no config beside it: put the {CONFIG_NAME} (or config.yaml) saved with it in "
                f"{path.parent}, e.g. GHNConfig(...).to_yaml('{path.parent / 'config.yaml'}')"
            )
        return _Located(f"local file {path}", config, lambda: path, remedy)
    raise MetaModelError(f"cannot load {path}: expected a directory, a .safetensors file or a legacy .pt checkpoint")


def _locate_registered(entry: RegisteredModel) -> _Located:
    weights, config = entry.directory / entry.weights, entry.directory / entry.config
    for f in (weights, config):
        if not f.is_file():
            raise MissingFileError(
                f"registered meta-model {entry.name!r} is incomplete: {f} is missing from the installed "
                "package; reinstall it (pip install --force-reinstall ghn)"
            )
    return _Located(
        f"registered meta-model {entry.name!r}", config, lambda: weights,
        "reinstall the package (pip install --force-reinstall ghn)", entry.sha256, entry.size,
    )


def _locate_hub(spec: str, revision: str | None, cache_dir: str | Path | None) -> _Located:
    repo_id, _, filename = spec.partition(":")
    filename = filename or WEIGHTS_NAME
    at = f"{repo_id}@{revision}" if revision else repo_id
    if filename.endswith(LEGACY_SUFFIXES):
        config = None
    else:
        # hub paths are POSIX whatever the local OS; the config sits next to the weights
        config = _download(spec, repo_id, str(PurePosixPath(filename).parent / CONFIG_NAME), revision, cache_dir)

    def weights() -> Path:
        return _download(spec, repo_id, filename, revision, cache_dir)

    remedy = ("delete the cached copy (`hf cache delete`, or remove it from the HF_HOME/HF_HUB_CACHE directory) "
              "and load again to download it afresh")
    return _Located(f"hub repository {at} ({filename})", config, weights, remedy)


def _download(spec: str, repo_id: str, filename: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    """One file through huggingface_hub's cache, its errors translated into ours."""
    # huggingface_hub and its HTTP client are only needed for hub ids: imported here so that
    # local and registered meta-models load without them.
    import httpx2  # huggingface_hub's HTTP client; transport errors during a download are its own
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    import ghn

    where = f"{constants.ENDPOINT} (HF_ENDPOINT)"
    not_local = f"(no local path {spec!r} exists either)"
    try:
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir,
            library_name="ghn", library_version=ghn.__version__,
        ))
    except HFValidationError as e:  # ids our pattern lets through but the hub forbids, e.g. "a--b/c"
        raise UnknownModelError(f"{spec!r} is not a valid hub repository id ({e}); pass {_FORMS}") from e
    except RevisionNotFoundError as e:
        raise UnknownModelError(
            f"repository {repo_id} on {where} has no revision {revision!r}: pass an existing branch, tag or commit"
        ) from e
    except RepositoryNotFoundError as e:  # also private/gated repositories without a valid token
        raise UnknownModelError(
            f"{spec!r} is not a registered name and {where} has no repository {repo_id!r} {not_local}. "
            f"Pass {_FORMS}; for a private repository log in first (`hf auth login` or HF_TOKEN)"
        ) from e
    except LocalEntryNotFoundError as e:
        if constants.is_offline_mode():
            raise HubUnavailableError(
                f"HF_HUB_OFFLINE is set and {filename} of {repo_id} is not in the cache "
                f"({cache_dir or constants.HF_HUB_CACHE}) {not_local}: unset HF_HUB_OFFLINE and load it once "
                "online, or pass a local path"
            ) from e
        raise HubUnavailableError(
            f"could not reach the hub at {where} to fetch {filename} of {repo_id}, and it is not cached "
            f"{not_local}: check the connection, HF_ENDPOINT and proxy settings, or pass a local path"
        ) from e
    except EntryNotFoundError as e:
        raise MissingFileError(
            f"repository {repo_id} has no file {filename!r}: meta-models are pushed with ghn.hub.push_to_hub "
            f"({WEIGHTS_NAME} + {CONFIG_NAME}); pick another file with 'org/repo:path/to/weights.safetensors'"
        ) from e
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as e:
        # huggingface_hub downloads into a temporary file and renames it only once complete,
        # so a failure here leaves nothing half-written under the cache's final paths.
        raise HubUnavailableError(
            f"downloading {filename} of {repo_id} from {where} failed ({type(e).__name__}: {e}); "
            "nothing partial was kept in the cache, load again to retry"
        ) from e


def _locate(name_or_path: str | os.PathLike, revision: str | None, cache_dir: str | Path | None) -> _Located:
    """Apply the resolution rules of the module docstring."""
    spec = os.fspath(name_or_path)
    path = Path(spec).expanduser()
    registry = _read_registry()
    if path.exists():
        if spec in registry:
            log.warning("local path %s shadows the registered meta-model of the same name", path)
        if revision is not None:
            raise RevisionNotApplicableError(
                f"revision={revision!r} applies to hub repositories, not to the local path {path}: drop revision="
            )
        return _locate_path(path)
    if spec in registry:
        if revision is not None:
            raise RevisionNotApplicableError(
                f"revision={revision!r} applies to hub repositories, not to registered {spec!r}: drop revision="
            )
        return _locate_registered(registry[spec])
    if spec == DEFAULT_MODEL:
        raise ModelNotShippedError(
            f"the default meta-model {DEFAULT_MODEL!r} ships with ghn but is missing from this installation's "
            f"registry ({PRETRAINED_DIR / REGISTRY_NAME}): the install is broken or lacks its package data. "
            f"Reinstall it (pip install --force-reinstall ghn), or pass a meta-model explicitly: "
            f"ghn.from_pretrained('path/to/dir') or ghn.from_pretrained('org/repo'), "
            f"ghn.predict(model, meta_model), or `ghn predict --meta-model PATH_OR_ORG/REPO`. Accepted: {_FORMS}"
        )
    if _REPO_ID.fullmatch(spec.partition(":")[0]):
        return _locate_hub(spec, revision, cache_dir)
    known = ", ".join(sorted(registry)) or "none: the installed registry is empty, reinstall ghn"
    raise UnknownModelError(
        f"unknown meta-model {spec!r}: no such local path, not a registered name (registered: {known}) and not "
        f"a hub repository id. Pass {_FORMS}"
    )


# -- reading and verifying ------------------------------------------------------------------


def _read_config(path: Path) -> PretrainedInfo:
    try:
        text = path.read_text()
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise InvalidConfigError(f"cannot parse {path}: {e}") from e
    if not isinstance(doc, dict):
        raise InvalidConfigError(f"{path} must hold a mapping, got {type(doc).__name__}")
    version = doc.get("format_version", 0)
    if not isinstance(version, int) or version < 0:
        raise InvalidConfigError(f"{path}: format_version must be a non-negative integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path} has format_version {version}, written by a newer ghn (written by ghn "
            f"{doc.get('ghn_version', '?')}); this version reads up to {FORMAT_VERSION}: upgrade (pip install -U ghn)"
        )
    try:
        if version == 0:  # bare GHNConfig fields, e.g. from GHNConfig.to_yaml
            return PretrainedInfo(GHNConfig.from_dict(doc), Metadata(), 0)
        weights = doc.get("weights") or {}
        return PretrainedInfo(
            GHNConfig.from_dict(doc["config"]), Metadata.from_dict(doc.get("metadata") or {}), version,
            weights.get("sha256"), weights.get("size"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidConfigError(
            f"{path} is not a valid meta-model config ({type(e).__name__}: {e}); re-save it with "
            "ghn.hub.save_pretrained"
        ) from e


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, sha256: str | None, size: int | None, loc: _Located) -> None:
    """Size first, so that a truncated file is reported as such rather than as a checksum mismatch."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise CorruptWeightsError(
            f"{path} ({loc.label}) has {actual} bytes, expected {size}: the file is truncated or damaged; {loc.remedy}"
        )
    if sha256 is not None:
        digest = sha256_file(path)
        if digest != sha256:
            raise ChecksumMismatchError(
                f"sha256 of {path} ({loc.label}) is {digest}, expected {sha256}: the file was modified or "
                f"corrupted and is not loaded; {loc.remedy}"
            )


TRAINING_RECORD = ("step", "stats", "train_config", "stages")  # what a training checkpoint says of its run


def _read_weights(
    path: Path, loc: _Located
) -> tuple[dict[str, torch.Tensor], GHNConfig | None, dict[str, Any]]:
    """State dict, the config of a ``.pt`` checkpoint (None for safetensors, whose config
    lies beside it) and a training checkpoint's `TRAINING_RECORD` entries (else empty),
    without unpickling any code."""
    if path.suffix in LEGACY_SUFFIXES:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses arbitrary objects with UnpicklingError; damage raises others
            raise CorruptWeightsError(
                f"cannot load {path} ({loc.label}) as a weights-only checkpoint ({type(e).__name__}): it is damaged "
                "or holds objects other than tensors and plain containers, which are never unpickled. Convert it "
                "in a trusted environment: GHN.from_checkpoint(torch.load(path)) then ghn.hub.save_pretrained"
            ) from e
        record: dict[str, Any] = {}
        if isinstance(ckpt, dict) and isinstance(ckpt.get("meta_model"), dict):  # a training checkpoint
            record = {k: ckpt[k] for k in TRAINING_RECORD if k in ckpt}
            ckpt = ckpt["meta_model"]
        if not (isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict)
                and isinstance(ckpt.get("state_dict"), dict)):
            raise CorruptWeightsError(
                f"{path} is not a GHN checkpoint: expected a dict with 'config' and 'state_dict' as written by "
                "GHN.checkpoint(), or a training checkpoint of experiments/train_ghn.py holding one under 'meta_model'"
            )
        try:
            return ckpt["state_dict"], GHNConfig.from_dict(ckpt["config"]), record
        except (TypeError, ValueError) as e:
            raise InvalidConfigError(f"the config inside {path} is invalid: {e}") from e
    try:
        return load_file(str(path), device="cpu"), None, {}
    except (safetensors.SafetensorError, OSError) as e:
        raise CorruptWeightsError(
            f"{path} ({loc.label}) is not a readable safetensors file ({e}): it is truncated or damaged; {loc.remedy}"
        ) from e


def _check_shapes(config: GHNConfig, state: Mapping[str, torch.Tensor], label: str) -> None:
    """Compare against a meta-device GHN: a config that disagrees with the weights (possibly
    a huge one) is reported without allocating the model."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GHN(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(expected.keys() - got), sorted(got.keys() - expected)
    wrong = [f"{k}: config {expected[k]} vs weights {got[k]}"
             for k in sorted(expected.keys() & got) if expected[k] != got[k]]
    if missing or unexpected or wrong:
        raise ConfigMismatchError(
            f"the config of {label} (hid={config.hid}, dec_hid={config.dec_hid}, max_shape={config.max_shape}, "
            f"num_classes={config.num_classes}, message_passing={config.message_passing!r}) does not describe its "
            f"weights: {len(wrong)} shape mismatch(es) {wrong[:3]}, {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}. The config and weights files come from different "
            "meta-models: use the config saved with these weights, or re-save both with ghn.hub.save_pretrained"
        )


# -- public API -----------------------------------------------------------------------------


def from_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> GHN:
    """Load a pretrained meta-model (in eval mode) from a registered name, a local path or
    the hub; see the module docstring for the resolution rules.

    Args:
        name_or_path: registered name, local directory/file, ``"org/repo"`` or
            ``"org/repo:file"``.
        revision: branch, tag or commit of a hub repository (default: ``main``).
        cache_dir: hub cache directory (default: huggingface_hub's, from ``HF_HOME``).
        device: where the returned meta-model lives.

    Raises:
        MetaModelError: one of its subclasses, each with what to do about it.
    """
    loc = _locate(name_or_path, revision, cache_dir)
    info = _read_config(loc.config) if loc.config is not None else None
    path = loc.weights()
    sha256 = loc.sha256 or (info.sha256 if info else None)
    size = loc.size or (info.size if info else None)
    _verify(path, sha256, size, loc)
    state, legacy_config, _ = _read_weights(path, loc)
    return _build(legacy_config if info is None else info.config, state, loc.label, device)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[GHN, dict[str, Any]]:
    """A meta-model from a ``.pt``/``.pth`` checkpoint, and what the checkpoint records of
    its training run.

    `path` holds `GHN.checkpoint()`'s dict, or a training checkpoint of
    ``experiments/train_ghn.py`` (the meta-model under ``"meta_model"``, with ``step``,
    ``stats``, ``train_config`` and ``stages``, returned as the record; empty for a bare
    checkpoint). Loaded weights-only: no code is unpickled.

    Raises:
        MetaModelError: one of its subclasses (missing file, not a checkpoint, damaged,
            config that does not match the weights), each saying what to do.
    """
    path = Path(path).expanduser()
    if path.suffix not in LEGACY_SUFFIXES:
        raise UnsupportedFormatError(f"{path} is not a .pt/.pth checkpoint; load other formats with from_pretrained")
    if not path.is_file():
        raise MissingFileError(f"no checkpoint at {path}")
    loc = _locate_path(path)
    state, config, record = _read_weights(path, loc)
    assert config is not None  # a .pt checkpoint carries its config
    return _build(config, state, loc.label, device), record


def _build(config: GHNConfig, state: Mapping[str, torch.Tensor], label: str, device: str | torch.device) -> GHN:
    _check_shapes(config, state, label)
    model = GHN(config)
    model.load_state_dict(state)
    log.info("loaded meta-model from %s", label)
    return model.to(device).eval()


def load_info(
    name_or_path: str | os.PathLike, revision: str | None = None, cache_dir: str | Path | None = None
) -> PretrainedInfo:
    """The config and metadata of a meta-model (same resolution as `from_pretrained`),
    without loading its weights; hub repositories only download their config."""
    loc = _locate(name_or_path, revision, cache_dir)
    if loc.config is not None:
        return _read_config(loc.config)
    path = loc.weights()
    _verify(path, loc.sha256, loc.size, loc)
    _, config, _ = _read_weights(path, loc)
    return PretrainedInfo(config, Metadata(), 0)


def save_pretrained(
    meta_model: GHN, directory: str | os.PathLike, metadata: Metadata | Mapping[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (config, metadata, format version,
    sha256 and size of the weights) into `directory`; returns the directory.

    Raises:
        ValueError: `metadata` has unknown fields or a ``num_classes`` other than the config's.
    """
    meta = metadata if isinstance(metadata, Metadata) else Metadata.from_dict(metadata or {})
    num_classes = meta_model.config.num_classes
    if meta.num_classes is not None and meta.num_classes != num_classes:
        raise ValueError(f"metadata num_classes={meta.num_classes} contradicts the config's {num_classes}")
    meta_dict = {**asdict(meta), "num_classes": num_classes}
    json.dumps(meta_dict)  # fail on values JSON cannot hold before anything is written

    import ghn

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    state = {k: v.detach().to("cpu").contiguous() for k, v in meta_model.state_dict().items()}
    header = {"format": "pt", "ghn_format_version": str(FORMAT_VERSION)}
    atomic_write(weights, lambda p: save_file(state, str(p), metadata=header))
    doc = {
        "format_version": FORMAT_VERSION,
        "ghn_version": ghn.__version__,
        "config": meta_model.config.to_dict(),
        "metadata": meta_dict,
        "weights": {"file": WEIGHTS_NAME, "sha256": sha256_file(weights), "size": weights.stat().st_size},
    }
    atomic_write(out / CONFIG_NAME, lambda p: p.write_text(json.dumps(doc, indent=2) + "\n"))
    log.info("saved meta-model to %s", out)
    return out


def push_to_hub(
    meta_model: GHN,
    repo_id: str,
    metadata: Metadata | Mapping[str, Any] | None = None,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload GHN meta-model",
    create_pr: bool = False,
) -> CommitInfo:
    """Save the meta-model (as `save_pretrained`) and upload both files to the hub repository
    `repo_id` in one commit, creating the repository if needed. The endpoint and token come
    from huggingface_hub (``HF_ENDPOINT``, ``HF_TOKEN`` or ``hf auth login``) unless `token`
    is given. Returns huggingface_hub's `CommitInfo` (``.oid`` pins the revision)."""
    if not _REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must look like 'org/repo', got {repo_id!r}")
    from huggingface_hub import CommitOperationAdd, HfApi

    import ghn

    api = HfApi(token=token, library_name="ghn", library_version=ghn.__version__)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(meta_model, tmp, metadata)
        ops = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=p) for p in sorted(folder.iterdir())]
        info = api.create_commit(
            repo_id, ops, commit_message=commit_message, revision=revision, create_pr=create_pr
        )
    log.info("pushed meta-model to %s (commit %s)", repo_id, info.oid)
    return info
