"""CIFAR-10 as in-memory uint8 tensors, and a fast, resumable batch loader over them.

Three kinds of source hold the same data set:

* a torchvision ``CIFAR10`` root (the ``cifar-10-batches-py`` pickles that
  ``torchvision.datasets.CIFAR10(..., download=True)`` fetches),
* an ImageFolder-layout folder (``train/<class>/*.jpg``, ``test/<class>/*.jpg``),
* a tar archive of that folder, e.g. ``../shared/data/cifar10-jpg.tar.gz``.

The first :func:`load_cifar10` call decodes the source once into a ``*.cifar-cache.pt``
file (next to the source, or under the cache directory when the source's folder is
read-only); later calls memory-map that file and return in well under a second.

Typical use::

    from ghn.data import cifar10_loader
    train = cifar10_loader("train", batch_size=64)         # augmented, shuffled
    test = cifar10_loader("test", batch_size=256, subset=1000)  # class-stratified sample
    for images, labels in train:                            # float32 [B,3,32,32], int64 [B]
        ...

Without ``root=``, the source is searched for in this order: ``$GHN_CIFAR10``,
``../shared/data/cifar10-jpg.tar.gz`` relative to the repository and to the working
directory, then the torchvision root ``~/.cache/ghn/cifar10``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import pickle
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from PIL import Image
from tqdm import tqdm

from ghn.atomic import atomic_write

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_SIZES",
    "CIFAR10Loader",
    "CIFAR10NotFoundError",
    "CIFAR10Tensors",
    "cifar10_loader",
    "cifar10_source",
    "load_cifar10",
]

logger = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
"""Official label order (index = label), which is also ImageFolder's alphabetical order."""

# Per-channel statistics of the CIFAR-10 training set in [0, 1] units; the GHN-2 paper's
# training recipe normalises with these, so predicted parameters expect them.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

CIFAR10_SIZES: Mapping[str, int] = MappingProxyType({"train": 50_000, "test": 10_000})
"""Images per split of the official data set (balanced: a tenth of each per class)."""

SPLITS = ("train", "test")
ENV_VAR = "GHN_CIFAR10"
_ARCHIVE_NAME = "cifar10-jpg.tar.gz"
_TORCHVISION_DIR = "cifar-10-batches-py"
_TORCHVISION_BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")  # Pillow's names for those
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
_CACHE_SUFFIX = ".cifar-cache.pt"
_CACHE_VERSION = 1  # bump when the cache layout changes so old files are rebuilt
_REPO_ROOT = Path(__file__).resolve().parents[1]

_IMAGE_SHAPE = (3, 32, 32)
_PAD = 4  # the standard CIFAR augmentation: pad by 4, crop 32x32 at random, flip at random
# Independent random streams derived from one seed, so that e.g. changing `shuffle`
# does not change the augmentation drawn for a given position.
_STREAM_SUBSET, _STREAM_ORDER, _STREAM_AUGMENT = 0, 1, 2


@dataclass(frozen=True)
class CIFAR10Tensors:
    """One split of CIFAR-10, fully in memory.

    Attributes:
        images: uint8 [N, 3, 32, 32], RGB, unnormalised.
        labels: int64 [N], indices into ``classes``.
        classes: class names, ``classes[label]``.
    """

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


class CIFAR10NotFoundError(FileNotFoundError):
    """No CIFAR-10 source was found; ``searched`` holds ``(place, reason)`` pairs."""

    def __init__(self, searched: list[tuple[str, str]], cache_dir: Path) -> None:
        self.searched = searched
        places = "\n".join(f"  - {place}: {reason}" for place, reason in searched)
        super().__init__(
            "CIFAR-10 not found. Looked in:\n"
            f"{places}\n"
            "Provide it in one of these ways:\n"
            f"  - set {ENV_VAR} to a torchvision CIFAR10 root, an ImageFolder folder "
            "(train/<class>/*.jpg, test/<class>/*.jpg) or a .tar.gz archive of one;\n"
            "  - pass root=<that path> to load_cifar10() / cifar10_loader();\n"
            "  - download it with torchvision (needs internet): "
            f"load_cifar10(download=True) stores it in {cache_dir / 'cifar10'}."
        )


def load_cifar10(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    strict: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> CIFAR10Tensors:
    """Load one split of CIFAR-10, decoding the source only the first time.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a torchvision CIFAR10 root, an ImageFolder folder, or a tar archive of
            one. ``None`` searches ``$GHN_CIFAR10``, ``../shared/data/cifar10-jpg.tar.gz``
            (relative to the repository, then the working directory) and
            ``<cache_dir>/cifar10``.
        download: if no source is found, download it with torchvision into ``root``
            (or ``<cache_dir>/cifar10``).
        strict: require the complete official data set (50,000 train and 10,000 test
            images, 10 balanced classes). Turn off for small custom folders.
        cache_dir: where decoded caches go when the source's folder is read-only, and
            where downloads go; default ``$XDG_CACHE_HOME/ghn`` or ``~/.cache/ghn``.

    Returns:
        images uint8 [N, 3, 32, 32], labels int64 [N] and class names. The tensors are
        memory-mapped from the cache file (copy-on-write), so loading is cheap.

    The cache is rebuilt when its source changes: an archive's or batch file's size or
    mtime, or a folder's entries (files added, removed or renamed; a file rewritten in
    place goes unnoticed, so delete the ``*.cifar-cache.pt`` file after such edits).

    Raises:
        CIFAR10NotFoundError: no source found; the message lists every place looked.
        ValueError: the source is malformed, or incomplete while ``strict``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cache_home = _cache_home(cache_dir)
    try:
        source = _find_source(root, cache_home)
    except CIFAR10NotFoundError:
        if not download:
            raise
        target = Path(root).expanduser() if root is not None else cache_home / "cifar10"
        # Imported here: torchvision costs seconds to import and is only needed to download.
        from torchvision import datasets

        logger.info("Downloading CIFAR-10 with torchvision into %s", target)
        datasets.CIFAR10(str(target), train=True, download=True)  # fetches both splits
        source = _find_source(target, cache_home)

    data = _load_or_build(source, cache_home)
    if strict:
        for name, part in data.items():
            _check_official(name, part)
    return data[split]


class CIFAR10Loader:
    """Iterable over batches of one CIFAR-10 split: ``(images, labels)``.

    ``images`` is float32 [B, 3, 32, 32], normalised with :data:`CIFAR10_MEAN` and
    :data:`CIFAR10_STD`; ``labels`` is int64 [B]. Both are on ``device``.

    Batches are a pure function of ``(seed, epoch, batch index)``: the shuffle order and
    the augmentation (random 32x32 crop of the image zero-padded by 4, random horizontal
    flip; done on whole batches of tensors) are drawn from generators seeded with them,
    never from the global RNG. Training is therefore reproducible, and resumable from
    :meth:`state_dict`.

    The loader is a stream with a position (epoch, next batch): iterating yields the
    rest of the current epoch, and finishing it moves to the next epoch, so
    ``for epoch in ...: for batch in loader`` sees a new order every epoch. A loop left
    early continues where it stopped on the next pass; :meth:`set_epoch` restarts.
    Only one pass at a time.

    Args:
        data: the split to iterate over (see :func:`load_cifar10`).
        batch_size: images per batch.
        shuffle: a new random order every epoch; otherwise the stored order.
        augment: the standard CIFAR crop + flip augmentation.
        drop_last: skip the last, smaller batch.
        subset: use only this many images, a seeded class-stratified sample (the
            stored order is grouped by class, so never "the first N"); its positions
            in ``data`` are ``loader.indices``.
        seed: seeds the subset, the order and the augmentation; must be >= 0.
        device: where batches are produced; augmentation and normalisation run there.
        channels_last: yield images in channels-last memory format (same values, other
            strides). Convolutions run faster on it, most of all the backward pass of
            depthwise and dilated ones on CPU (benchmarks/bench_train.py); a model
            that calls ``.view`` on its input needs the default.
    """

    def __init__(
        self,
        data: CIFAR10Tensors,
        batch_size: int = 64,
        *,
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        subset: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.seed = seed
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.indices: Tensor = (
            torch.arange(len(data))
            if subset is None
            else _stratified_sample(data.labels, subset, seed)
        )
        if len(self) == 0:
            raise ValueError(
                f"no batches: {self.num_samples} images, batch_size={batch_size}, drop_last=True"
            )
        std = torch.tensor(CIFAR10_STD, device=self.device).view(1, 3, 1, 1)
        mean = torch.tensor(CIFAR10_MEAN, device=self.device).view(1, 3, 1, 1)
        # (x / 255 - mean) / std as one multiply-add on the uint8 batch.
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std
        self._epoch = 0
        self._batch = 0

    @property
    def num_samples(self) -> int:
        """Images per epoch (the subset size when ``subset`` is given)."""
        return len(self.indices)

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to."""
        return self._epoch

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass yield epoch ``epoch`` (>= 0) from its first batch."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch, self._batch = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch, plus the settings that give it meaning."""
        return {
            "epoch": self._epoch,
            "batch": self._batch,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
            "shuffle": int(self.shuffle),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at the position saved by :meth:`state_dict`.

        Raises:
            ValueError: the state comes from a loader whose batches differ from this
                one's (other seed, batch size, data size or shuffling).
        """
        for key in ("seed", "batch_size", "num_samples", "shuffle"):
            if state[key] != self.state_dict()[key]:
                raise ValueError(
                    f"cannot resume: saved {key}={state[key]}, this loader has "
                    f"{self.state_dict()[key]}, so positions would point at other images"
                )
        if not 0 <= state["batch"] < len(self):
            raise ValueError(f"batch {state['batch']} out of range for {len(self)} batches")
        self.set_epoch(state["epoch"])
        self._batch = state["batch"]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start, n_batches = self._epoch, self._batch, len(self)
        order, offsets, flips = self._epoch_plan(epoch)
        for b in range(start, n_batches):
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            batch = self._make_batch(self.indices[order[rows]], offsets[rows], flips[rows])
            # Advance before yielding: a state_dict() taken while the caller trains on
            # this batch must point at the next one.
            self._epoch, self._batch = (epoch, b + 1) if b + 1 < n_batches else (epoch + 1, 0)
            yield batch

    def _epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor, Tensor]:
        """Order of positions [n], crop offsets [n, 2] and flip flags [n] for an epoch."""
        n = self.num_samples
        if self.shuffle:
            rng = _rng(self.seed, _STREAM_ORDER, epoch)
            order = torch.from_numpy(rng.permutation(n))
        else:
            order = torch.arange(n)
        rng = _rng(self.seed, _STREAM_AUGMENT, epoch)
        offsets = torch.from_numpy(rng.integers(0, 2 * _PAD + 1, size=(n, 2)))
        flips = torch.from_numpy(rng.random(n) < 0.5)
        return order, offsets, flips

    def _make_batch(self, idx: Tensor, offsets: Tensor, flips: Tensor) -> tuple[Tensor, Tensor]:
        images, labels = self.data.images[idx], self.data.labels[idx]
        # Move uint8 (4x less data than float32), then augment and normalise on device.
        non_blocking = self.device.type == "cuda"
        if non_blocking:
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, non_blocking=non_blocking)
        labels = labels.to(self.device, non_blocking=non_blocking)
        if self.augment:
            images = _crop_flip(images, offsets.to(self.device), flips.to(self.device))
        images = images.to(torch.float32, memory_format=self.memory_format)
        return images.mul_(self._scale).add_(self._shift), labels


def cifar10_loader(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    *,
    augment: bool | None = None,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    subset: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    strict: bool = True,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    channels_last: bool = False,
) -> CIFAR10Loader:
    """A :class:`CIFAR10Loader` over one split, with per-split defaults.

    ``augment``, ``shuffle`` and ``drop_last`` default to True for ``"train"`` and
    False for ``"test"``. ``root``, ``strict``, ``download`` and ``cache_dir`` are passed
    to :func:`load_cifar10` (``strict=False`` for small custom folders, ``download=True``
    to fetch the data set when no source is found). Yields images float32
    [B, 3, 32, 32] (normalised; channels-last strides with ``channels_last``) and labels
    int64 [B].
    """
    train = split == "train"
    return CIFAR10Loader(
        load_cifar10(split, root, strict=strict, download=download, cache_dir=cache_dir),
        batch_size,
        shuffle=train if shuffle is None else shuffle,
        augment=train if augment is None else augment,
        drop_last=train if drop_last is None else drop_last,
        subset=subset,
        seed=seed,
        device=device,
        channels_last=channels_last,
    )


# --------------------------------------------------------------------------- batches


def _rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, *key)))


def _stratified_sample(labels: Tensor, size: int, seed: int) -> Tensor:
    """Indices [size] of a seeded sample holding each class in proportion to its size."""
    n = len(labels)
    if not 0 < size <= n:
        raise ValueError(f"subset must be in 1..{n}, got {size}")
    rng = _rng(seed, _STREAM_SUBSET)
    labels_np = labels.numpy()
    classes, counts = np.unique(labels_np, return_counts=True)
    quotas = size * counts / n
    take = np.floor(quotas).astype(np.int64)
    # Largest-remainder rounding; random tie-breaks so no class is favoured by its index.
    leftover = size - int(take.sum())
    by_remainder = np.lexsort((rng.random(len(classes)), -(quotas - take)))
    take[by_remainder[:leftover]] += 1
    picks = [
        rng.choice(np.flatnonzero(labels_np == c), size=k, replace=False)
        for c, k in zip(classes, take)
    ]
    idx = np.concatenate(picks)
    # Interleave the classes so that even an unshuffled pass over the subset is mixed.
    rng.shuffle(idx)
    return torch.from_numpy(idx)


def _crop_flip(images: Tensor, offsets: Tensor, flips: Tensor) -> Tensor:
    """Crop each image of uint8 [B, C, H, W] from its zero-padded copy, maybe mirrored.

    ``offsets`` int64 [B, 2] is the (row, column) of each crop in the padded image,
    ``flips`` bool [B] mirrors left-right. One gather does both for the whole batch
    (measured 5x faster than advanced indexing with per-pixel row/column tensors).
    """
    b, c, h, w = images.shape
    padded = F.pad(images, (_PAD, _PAD, _PAD, _PAD)).flatten(2)  # zeros, like RandomCrop
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # [B, H]
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    pixels = (rows[:, :, None] * (w + 2 * _PAD) + cols[:, None, :]).flatten(1)  # [B, H*W]
    return padded.gather(2, pixels[:, None, :].expand(b, c, h * w)).view(b, c, h, w)


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Source:
    kind: Literal["archive", "imagefolder", "torchvision"]
    path: Path


def cifar10_source(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The source `load_cifar10(root=root)` reads, ``{"kind", "path"}`` (kind: archive,
    imagefolder or torchvision; path resolved), found by the same search without decoding
    anything: to record next to results which copy of CIFAR-10 they were measured on.

    Raises:
        CIFAR10NotFoundError: no source found; the message lists every place looked.
    """
    source = _find_source(root, _cache_home(None))
    return {"kind": source.kind, "path": str(source.path.resolve())}


def _cache_home(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ghn"


def _find_source(root: str | os.PathLike[str] | None, cache_home: Path) -> _Source:
    if root is not None:
        candidates: list[tuple[str, Path | None]] = [("root=", Path(root).expanduser())]
    else:
        env = os.environ.get(ENV_VAR)
        shared = [(base / ".." / "shared" / "data" / _ARCHIVE_NAME).resolve() for base in (_REPO_ROOT, Path.cwd())]
        candidates = [(f"${ENV_VAR}", Path(env).expanduser() if env else None)]
        candidates += [("shared data", path) for path in dict.fromkeys(shared)]
        candidates.append(("torchvision root", cache_home / "cifar10"))
    searched: list[tuple[str, str]] = []
    for label, path in candidates:
        if path is None:
            searched.append((label, "not set"))
            continue
        try:
            return _identify(path)
        except ValueError as exc:
            searched.append((f"{path} ({label})", str(exc)))
            if label.startswith("$"):  # an explicit setting that fails deserves a word
                logger.warning("Ignoring %s=%s: %s", ENV_VAR, path, exc)
    raise CIFAR10NotFoundError(searched, cache_home)


def _identify(path: Path) -> _Source:
    """The kind of source at ``path``; ValueError saying why when it is none."""
    if not path.exists():
        raise ValueError("does not exist")
    if path.is_file():
        # Judged by name, not content: a cache hit must not even open the archive.
        if path.name.endswith(_ARCHIVE_SUFFIXES):
            return _Source("archive", path)
        raise ValueError(f"is a file but not a tar archive ({', '.join(_ARCHIVE_SUFFIXES)})")
    for batches in (path / _TORCHVISION_DIR, path):
        if (batches / "batches.meta").is_file():
            return _Source("torchvision", batches)
    if all((path / split).is_dir() for split in SPLITS):
        return _Source("imagefolder", path)
    raise ValueError(
        f"is a folder but holds neither train/ and test/ class folders "
        f"nor a torchvision {_TORCHVISION_DIR}/"
    )


def _fingerprint(source: _Source) -> str:
    """Changes whenever the source's content plausibly changed (cheap: stats only)."""
    path = source.path
    if source.kind == "archive":
        st = path.stat()
        parts: list[object] = [st.st_size, st.st_mtime_ns]
    elif source.kind == "torchvision":
        names = ["batches.meta", *(n for split in SPLITS for n in _TORCHVISION_BATCHES[split])]
        parts = [(n, (path / n).stat().st_size, (path / n).stat().st_mtime_ns) for n in names]
    else:
        # A folder's mtime changes when entries are added, removed or renamed; listing
        # and stat-ing 60,000 files instead would cost more than the cache saves.
        folders = [path / s for s in SPLITS]
        folders += [d for s in SPLITS for d in (path / s).iterdir() if d.is_dir()]
        parts = sorted((str(d.relative_to(path)), d.stat().st_mtime_ns) for d in folders)
    return json.dumps([_CACHE_VERSION, source.kind, parts])


def _decode(source: _Source) -> tuple[list[str], dict[str, tuple[Tensor, Tensor]]]:
    if source.kind == "torchvision":
        return _read_torchvision(source.path)
    if source.kind == "archive":
        return _assemble(_archive_records(source.path), total=None, what=source.path.name)
    files = _folder_files(source.path)
    records = ((*key, (source.path / "/".join(key)).read_bytes()) for key in files)
    return _assemble(records, total=len(files), what=source.path.name)


def _layout_key(name: str) -> tuple[str, str, str] | None:
    """``(split, class, file)`` for an image at ``[prefix/]split/class/file``, else None."""
    # Plain string operations: this runs 60,000 times, and pathlib cost seconds here.
    parts = name.split("/")
    if len(parts) < 3 or "__MACOSX" in parts:
        return None
    split, cls, file = parts[-3:]
    if split not in SPLITS or cls.startswith(".") or file.startswith("."):
        return None
    if os.path.splitext(file)[1].lower() not in _IMAGE_SUFFIXES:
        return None
    return split, cls, file


def _archive_records(path: Path) -> Iterator[tuple[str, str, str, bytes]]:
    try:
        # "r|*": a single sequential pass over the (compressed) stream, nothing on disk.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                key = _layout_key(member.name) if member.isfile() else None
                file = tar.extractfile(member) if key is not None else None
                if file is not None:
                    yield (*key, file.read())
    except tarfile.TarError as exc:  # tarfile's messages do not name the file
        raise ValueError(f"{path}: unreadable tar archive ({exc}); is it complete?") from exc


def _folder_files(root: Path) -> list[tuple[str, str, str]]:
    files = []
    for split in SPLITS:
        for cls in sorted(d for d in (root / split).iterdir() if d.is_dir()):
            for file in sorted(cls.iterdir()):
                key = _layout_key(f"{split}/{cls.name}/{file.name}")
                if key is not None and file.is_file():
                    files.append(key)
    return files


def _assemble(
    records: Iterable[tuple[str, str, str, bytes]], total: int | None, what: str
) -> tuple[list[str], dict[str, tuple[Tensor, Tensor]]]:
    """Decode ``(split, class, file, encoded bytes)`` records into tensors per split.

    Images end up sorted by (class, file name) whatever order the records come in,
    the order ImageFolder uses, so every source kind gives the same tensors.
    """
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    keys: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    # Serial on purpose: a 2-process pool measured no faster on the shared 2-core dev
    # machine, and this runs once per source; the cache serves every later run.
    bar = tqdm(records, total=total, desc=f"Decoding {what}", unit="img", disable=None)
    for split, cls, file, blob in bar:
        images[split].append(_decode_image(blob, f"{split}/{cls}/{file}"))
        keys[split].append((cls, file))
    for split in SPLITS:
        if not keys[split]:
            raise ValueError(f"{what}: no images under {split}/<class>/")
    classes = sorted({cls for cls, _ in keys["train"]})
    test_classes = sorted({cls for cls, _ in keys["test"]})
    if test_classes != classes:
        raise ValueError(f"{what}: train classes {classes} differ from test classes {test_classes}")
    label_of = {cls: i for i, cls in enumerate(classes)}
    out = {}
    for split in SPLITS:
        order = sorted(range(len(keys[split])), key=keys[split].__getitem__)
        pixels = np.stack([images[split][i] for i in order])  # [N, H, W, C]
        out[split] = (
            torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
            torch.tensor([label_of[keys[split][i][0]] for i in order], dtype=torch.int64),
        )
    return classes, out


def _decode_image(blob: bytes, name: str) -> np.ndarray:
    """uint8 [32, 32, 3] RGB from an encoded JPEG/PNG/WebP file.

    Pillow rather than torchvision.io, whose decoders are deprecated since 0.29.
    """
    try:
        with Image.open(io.BytesIO(blob), formats=_IMAGE_FORMATS) as image:
            # Checked before decoding, so a huge file is refused without decoding it.
            if image.size != _IMAGE_SHAPE[1:]:
                raise ValueError(f"{name}: expected a 32x32 image, got {image.size[0]}x{image.size[1]}")
            # convert() copies even when there is nothing to convert, so only when needed.
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (OSError, SyntaxError) as exc:  # what Pillow raises for unreadable files
        raise ValueError(f"{name}: cannot decode image: {exc}") from exc


class _BatchUnpickler(pickle.Unpickler):
    """Reads CIFAR-10 python batches, refusing every object but NumPy arrays.

    Plain unpickling runs whatever code a file names; a data path should not do that.
    """

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),  # as pickled by NumPy 1 (official files)
        ("numpy._core.multiarray", "_reconstruct"),  # as pickled by NumPy 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, object]:
    with open(path, "rb") as f:
        # latin1: the official files were pickled by Python 2 (str keys, raw byte data).
        batch = _BatchUnpickler(f, encoding="latin1").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _read_torchvision(folder: Path) -> tuple[list[str], dict[str, tuple[Tensor, Tensor]]]:
    classes = [str(name) for name in _unpickle(folder / "batches.meta")["label_names"]]
    out = {}
    for split in SPLITS:
        batches = [_unpickle(folder / name) for name in _TORCHVISION_BATCHES[split]]
        # Rows are 3072 bytes: the R, G and B planes of 32x32, i.e. already CHW.
        pixels = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = [int(label) for b in batches for label in b["labels"]]
        out[split] = (
            torch.from_numpy(pixels.reshape(-1, *_IMAGE_SHAPE)),
            torch.tensor(labels, dtype=torch.int64),
        )
    return classes, out


# --------------------------------------------------------------------------- cache


def _cache_paths(source: _Source, cache_home: Path) -> list[Path]:
    """Where the cache may live, in order of preference: next to the source, then home."""
    path = source.path
    if source.kind == "archive":
        stem = next((path.name[: -len(s)] for s in _ARCHIVE_SUFFIXES if path.name.endswith(s)), path.name)
        beside = path.with_name(stem + _CACHE_SUFFIX)
    else:
        stem = path.name
        beside = path / ("cifar10" + _CACHE_SUFFIX)
    # Keyed by the source's absolute path only (its size/mtime are checked inside the
    # file), so a changed source overwrites its cache instead of orphaning 200 MB.
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return [beside, cache_home / f"{stem}-{key}{_CACHE_SUFFIX}"]


def _load_or_build(source: _Source, cache_home: Path) -> dict[str, CIFAR10Tensors]:
    fingerprint = _fingerprint(source)
    paths = _cache_paths(source, cache_home)
    for path in paths:
        if not path.is_file():
            continue
        try:
            saved, data = _read_cache(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable cache is rebuilt, never fatal
            logger.warning("Ignoring corrupt CIFAR-10 cache %s (%s); rebuilding it", path, exc)
            continue
        if saved == fingerprint:
            logger.debug("Loaded CIFAR-10 from cache %s", path)
            return data
        logger.info("CIFAR-10 cache %s is stale (its source changed); rebuilding it", path)

    logger.info("Decoding CIFAR-10 from %s (once; later runs use the cache)", source.path)
    classes, splits = _decode(source)
    blob: dict[str, object] = {"version": _CACHE_VERSION, "fingerprint": fingerprint, "classes": classes}
    for split, (images, labels) in splits.items():
        blob[f"{split}_images"], blob[f"{split}_labels"] = images, labels
    data = _tensors_from(blob)
    _write_cache(blob, paths)
    return data


def _read_cache(path: Path) -> tuple[str, dict[str, CIFAR10Tensors]]:
    # mmap: nothing is read until used, so a load costs milliseconds; weights_only:
    # tensors, strings and numbers only, never arbitrary pickled objects.
    blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(blob, dict) or blob.get("version") != _CACHE_VERSION:
        raise ValueError("not a CIFAR-10 cache of this version")
    return str(blob["fingerprint"]), _tensors_from(blob)


def _tensors_from(blob: dict[str, object]) -> dict[str, CIFAR10Tensors]:
    """Check the cache's structure; ValueError on anything a consumer could trip on."""
    classes = blob["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ValueError("bad class list")
    out = {}
    for split in SPLITS:
        images, labels = blob[f"{split}_images"], blob[f"{split}_labels"]
        if not (isinstance(images, Tensor) and isinstance(labels, Tensor)):
            raise ValueError(f"{split}: images and labels must be tensors")
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != _IMAGE_SHAPE:
            raise ValueError(f"{split}: images are {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.int64 or labels.shape != (len(images),) or not len(labels):
            raise ValueError(f"{split}: labels are {labels.dtype} {tuple(labels.shape)}")
        if labels.min() < 0 or labels.max() >= len(classes):
            raise ValueError(f"{split}: labels outside 0..{len(classes) - 1}")
        out[split] = CIFAR10Tensors(images, labels, list(classes))
    return out


def _check_official(split: str, data: CIFAR10Tensors) -> None:
    """ValueError unless ``data`` is the complete, balanced official split."""
    expected = CIFAR10_SIZES[split]
    counts = torch.bincount(data.labels, minlength=len(data.classes)).tolist()
    # The names matter too: other code takes label i to mean CIFAR10_CLASSES[i].
    if data.classes != list(CIFAR10_CLASSES) or counts != [expected // 10] * 10:
        raise ValueError(
            f"{split}: expected the official CIFAR-10 ({expected:,} images, "
            f"{expected // 10:,} in each of {', '.join(CIFAR10_CLASSES)}), found "
            f"{len(data):,} images: {dict(zip(data.classes, counts))}. The source may be "
            "truncated; pass strict=False to use a partial or custom data set."
        )


def _writable_dir(folder: Path) -> bool:
    # os.access alone is not enough: it says yes to root even for a folder whose mode
    # says read-only (like the shared data folder), which must not be written into.
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK)


def _write_cache(blob: dict[str, object], paths: list[Path]) -> None:
    """Save to the first writable place, atomically: a reader sees all of it or none."""
    for path in paths:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if not _writable_dir(path.parent):
            continue
        try:
            atomic_write(path, lambda tmp: torch.save(blob, tmp))
        except (OSError, RuntimeError) as exc:  # RuntimeError: torch's writer, e.g. disk full
            logger.warning("Could not write CIFAR-10 cache %s: %s", path, exc)
            continue
        logger.info("Cached decoded CIFAR-10 at %s", path)
        return
    logger.warning("No writable place for the CIFAR-10 cache (tried %s); "
                   "every run will decode again", ", ".join(map(str, paths)))
