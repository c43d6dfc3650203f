"""The meta-training loader: meta-batches of built networks and their batched graphs.

Each item is ``(modules, graphs)``: ``M`` freshly built ``nn.Module`` s and a
``torch_geometric.data.Batch`` of their computational graphs, with ``graphs.arch_index``
the ``[M]`` indices of the architectures in their source. ``MetaBatchLoader`` runs the
data set in DataLoader workers and keeps the position for checkpoints.

Networks come from a ``deepnets.NetBuilder(init=False)``: copies of cached blocks, the
same modules as ``NetConfig.build`` but with **uninitialised parameters** (meta-training
predicts every one; build from ``NetConfig`` to train a network itself). Workers trace
the graphs (replaying each distinct block's traced graph, ``ghn.graph.SubgraphCache``)
and send them with the architectures' configs; the main process builds the modules
itself, because copying cached blocks is several times cheaper than pickling a network
across processes.

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

from deepnets.builder import NetBuilder, gc_paused
from deepnets.generator import Split
from deepnets.net import NetConfig
from ghn.graph import SubgraphCache, build_graph
from ghn.pyg import Batch


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
        num_classes, imagenet_input: how networks are built (``NetBuilder.build``).
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
        # One of each per process: workers start with their own (empty) copies.
        self.builder = NetBuilder(init=False)
        self.subgraphs = SubgraphCache(key=self.builder.block_key)
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
        modules = self.modules([self.source[i] for i in indices])
        return modules, self.graphs(modules, indices)

    def modules(self, configs: Sequence[NetConfig]) -> list[nn.Module]:
        """The networks of ``configs``, as this data set builds them."""
        return [self.builder.build(c, self.num_classes, self.imagenet_input) for c in configs]

    def graphs(self, modules: Sequence[nn.Module], indices: Sequence[int]) -> Batch:
        """The batched graphs of ``modules``, the architectures ``indices`` of the source.
        Blocks are traced once per process and replayed afterwards (``SubgraphCache``)."""
        graphs = Batch.from_data_list(
            [build_graph(m, input_shape=self.input_shape, subgraphs=self.subgraphs) for m in modules]
        )
        graphs.arch_index = torch.tensor(indices, dtype=torch.long)
        return graphs

    def __iter__(self) -> Iterator[MetaBatch] | Iterator[tuple[list[NetConfig], Batch]]:
        """Meta-batches ``(modules, graphs)``; in a DataLoader worker ``(configs, graphs)``,
        for the main process to build the modules from (``MetaBatchLoader`` does)."""
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if not 0 <= self.start <= len(self):
            raise ValueError(f"start {self.start} outside the {len(self)} meta-batches of an epoch")
        order = self.order(self.epoch)
        M = self.meta_batch_size
        for b in range(self.start + worker, len(self), workers):
            indices = order[b * M : (b + 1) * M].tolist()
            if info is None:
                yield self.build(indices)
                continue
            configs = [self.source[i] for i in indices]
            with gc_paused():  # the modules are freed before any collection sees them
                graphs = self.graphs(self.modules(configs), indices)
            yield configs, graphs


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

    def state_dict(self) -> dict[str, Any]:
        """The position of the next meta-batch, plus the settings that give it meaning."""
        ds = self.dataset
        return {"epoch": self.epoch, "position": self.position, "source": getattr(ds.source, "name", None),
                "seed": ds.seed, "meta_batch_size": ds.meta_batch_size, "num_archs": ds.num_archs,
                "shuffle": int(ds.shuffle)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the position saved by :meth:`state_dict`.

        Raises:
            ValueError: the state comes from a loader whose meta-batches differ from this
                one's (other split, seed, meta-batch size, number of architectures or
                shuffling), or its position is outside an epoch.
        """
        mine = self.state_dict()
        for key in ("source", "seed", "meta_batch_size", "num_archs", "shuffle"):
            if key in state and state[key] != mine[key]:  # states saved before these keys: position only
                raise ValueError(f"cannot resume: saved {key}={state[key]!r}, this loader has {mine[key]!r}, "
                                 "so the saved position would point at other architectures")
        if not 0 <= int(state["position"]) <= len(self):
            raise ValueError(f"position {state['position']} outside the {len(self)} meta-batches of an epoch")
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
            if workers:
                configs, graphs = item
                item = self.dataset.modules(configs), graphs
            yield item
        self.epoch, self.position = self.epoch + 1, 0


def _keep(item: Any) -> Any:
    """Collate that leaves items as they are (module-level: picklable)."""
    return item
