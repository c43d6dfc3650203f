"""The meta-training loader: meta-batches of built networks and their batched graphs.

Each item is ``(modules, graphs)``: ``M`` freshly built ``nn.Module`` s (default
initialisation) and a ``torch_geometric.data.Batch`` of their computational graphs, with
``graphs.arch_index`` the ``[M]`` indices of the architectures in their source. Building
happens in DataLoader workers; ``MetaBatchLoader`` runs them and keeps the position for
checkpoints.

Order: epoch ``e`` visits the architectures in a permutation drawn from ``(seed, e)``,
cut into meta-batches of ``M`` (an incomplete last one is dropped). Meta-batch ``b`` is
built by worker ``(b - start) % num_workers`` and DataLoader hands batches out in
round-robin worker order, so the sequence is the same for any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torch_geometric.data import Batch

from deepnets.generator import Split
from deepnets.net import NetConfig


MetaBatch = tuple[list[nn.Module], Batch]


class MetaBatchDataset(IterableDataset):
    """Meta-batches of ``M`` architectures from a split or a list of architectures.

    Args:
        source: a ``Split`` (e.g. ``get_split("train", narrow=True)``) or a sequence of
            ``NetConfig`` (e.g. ``read_records(path).configs``).
        meta_batch_size: architectures per meta-batch (``M``; GHN-2 used 8).
        seed: seed of the per-epoch shuffling.
        num_archs: use only the first ``num_archs`` architectures of ``source``.
        shuffle: permute per epoch (otherwise the source order every epoch).
        num_classes, imagenet_input: how networks are built (``NetConfig.build``).
        input_shape: example input ``(C, H, W)`` for graph construction.
        epoch, start: the epoch to iterate and the meta-batch to start from; usually set
            by ``MetaBatchLoader`` from its state.
    """

    def __init__(
        self,
        source: Split | Sequence[NetConfig],
        meta_batch_size: int = 8,
        seed: int = 0,
        num_archs: int | None = None,
        shuffle: bool = True,
        num_classes: int = 10,
        imagenet_input: bool = False,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        epoch: int = 0,
        start: int = 0,
    ) -> None:
        super().__init__()
        if meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be positive, got {meta_batch_size}")
        self.source = source
        self.meta_batch_size = meta_batch_size
        self.seed = seed
        self.num_archs = len(source) if num_archs is None else min(num_archs, len(source))
        self.shuffle = shuffle
        self.num_classes = num_classes
        self.imagenet_input = imagenet_input
        self.input_shape = tuple(input_shape)
        self.epoch = epoch
        self.start = start
        if len(self) == 0:
            raise ValueError(f"{self.num_archs} architectures make no meta-batch of {meta_batch_size}")

    def __len__(self) -> int:
        """Meta-batches per epoch."""
        return self.num_archs // self.meta_batch_size

    def order(self, epoch: int) -> np.ndarray:
        """Architecture indices in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return np.arange(self.num_archs)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(epoch,)))
        return rng.permutation(self.num_archs)

    def build(self, indices: Sequence[int]) -> MetaBatch:
        """Build the networks ``indices`` of the source and their batched graphs."""
        # Imported here so that building architectures does not need the graph module.
        from ghn.graph import build_graph

        modules = [self.source[i].build(self.num_classes, self.imagenet_input) for i in indices]
        graphs = Batch.from_data_list([build_graph(m, input_shape=self.input_shape) for m in modules])
        graphs.arch_index = torch.tensor(indices, dtype=torch.long)
        return modules, graphs

    def __iter__(self) -> Iterator[MetaBatch]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if not 0 <= self.start <= len(self):
            raise ValueError(f"start {self.start} outside the {len(self)} meta-batches of an epoch")
        order = self.order(self.epoch)
        M = self.meta_batch_size
        for b in range(self.start + worker, len(self), workers):
            modules, graphs = self.build(order[b * M : (b + 1) * M].tolist())
            # In a worker, the modules are about to be pickled to the main process.
            yield (modules if info is None else _SharedModules(modules)), graphs


class MetaBatchLoader:
    """Runs a ``MetaBatchDataset`` in DataLoader workers, one epoch per ``for`` loop.

    It counts the meta-batches handed out, so ``state_dict()`` taken after training on a
    meta-batch resumes (``load_state_dict``) right after it, with the same order::

        loader = MetaBatchLoader(MetaBatchDataset(get_split("train"), 8), num_workers=2)
        for modules, graphs in loader:  # one epoch
            ...
            checkpoint["loader"] = loader.state_dict()
    """

    def __init__(self, dataset: MetaBatchDataset, num_workers: int = 2, prefetch_factor: int = 2) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.epoch = dataset.epoch
        self.position = dataset.start

    def __len__(self) -> int:
        return len(self.dataset)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __iter__(self) -> Iterator[MetaBatch]:
        self.dataset.epoch, self.dataset.start = self.epoch, self.position
        workers = self.num_workers
        loader = DataLoader(
            self.dataset,
            batch_size=None,  # items are whole meta-batches already
            collate_fn=_keep,
            num_workers=workers,
            prefetch_factor=self.prefetch_factor if workers else None,
        )
        for item in loader:
            self.position += 1
            yield item
        self.epoch, self.position = self.epoch + 1, 0


def _keep(item: Any) -> Any:
    """Collate that leaves modules and graph batches as they are (module-level: picklable)."""
    return item


class _SharedModules(list):
    """A list of modules that crosses a process boundary as one flat tensor per dtype.

    Pickled one by one, each of the hundreds of tensors of a network moves to its own
    shared-memory segment with its own file-descriptor handshake, which made sending a
    network slower than building it. Here the modules travel with their tensors detached
    (plain pickle of Python objects) plus one tensor per dtype; unpickling rebinds every
    parameter and buffer as a view of those and returns a plain list.
    """

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _unpack, _pack(list(self))


# (submodule number in traversal order, "_parameters" or "_buffers", name, shape, dtype,
#  is parameter, requires grad)
_Slot = tuple[int, str, str, tuple[int, ...], torch.dtype, bool, bool]


def _submodules(modules: Sequence[nn.Module]) -> list[nn.Module]:
    return [sub for m in modules for sub in m.modules()]


def _pack(
    modules: list[nn.Module],
) -> tuple[list[nn.Module], list[_Slot], dict[torch.dtype, tuple[torch.Tensor, list[int]]]]:
    """Detach every tensor from ``modules``; return them, their slots and per dtype the
    concatenated tensors with their sizes."""
    slots: list[_Slot] = []
    chunks: dict[torch.dtype, list[torch.Tensor]] = {}
    for k, sub in enumerate(_submodules(modules)):
        for kind in ("_parameters", "_buffers"):
            store = getattr(sub, kind)
            for name, t in store.items():
                if t is None:
                    continue
                slots.append((k, kind, name, tuple(t.shape), t.dtype, isinstance(t, nn.Parameter), t.requires_grad))
                chunks.setdefault(t.dtype, []).append(t.detach().reshape(-1))
                store[name] = None
    flats = {dtype: (torch.cat(ts), [t.numel() for t in ts]) for dtype, ts in chunks.items()}
    return modules, slots, flats


def _unpack(
    modules: list[nn.Module], slots: list[_Slot], flats: dict[torch.dtype, tuple[torch.Tensor, list[int]]]
) -> list[nn.Module]:
    subs = _submodules(modules)
    pieces = {dtype: iter(flat.split(sizes)) for dtype, (flat, sizes) in flats.items()}
    for k, kind, name, shape, dtype, is_param, requires_grad in slots:
        t = next(pieces[dtype]).view(shape)
        getattr(subs[k], kind)[name] = nn.Parameter(t, requires_grad=requires_grad) if is_param else t
    return modules
