"""Fast construction of many networks: copy cached blocks instead of constructing them.

A DeepNets network is a few hundred small modules, and constructing a module
(``nn.Module.__init__``, attribute registration, default initialisation) costs far more
than copying one. ``NetBuilder`` constructs each distinct block (an op, a cell's
preprocessing, the stem, the head: a ``deepnets.net.Block``) once and afterwards hands out
copies of it, which is how the meta-training loader builds networks at the rate training
consumes them.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from deepnets.net import Block, NetConfig, Network


class NetBuilder:
    """Builds ``Network`` s from ``NetConfig`` s by copying cached blocks.

    ``builder.build(cfg, num_classes, imagenet_input)`` returns a network of the same
    modules, names, shapes and forward as ``cfg.build(num_classes, imagenet_input)``,
    several times faster. The difference is the initial parameter values: every distinct
    block is initialised once (PyTorch's default initialisation, seeded so that it is the
    same in every process) and copied, so networks sharing a block start with equal values
    in it. With ``init=False`` parameters are allocated and left uninitialised (arbitrary
    values, possibly not finite), which saves copying megabytes per network when every
    parameter is about to be predicted or loaded, as in meta-training. Buffers (batch-norm
    statistics) are always initialised. Train networks from ``NetConfig.build`` when
    independent random initialisations matter.

    Args:
        max_blocks: blocks kept, least recently used evicted first. The published train
            split uses a few hundred distinct blocks; each holds one block's parameters.
        seed: seed of the blocks' initialisation.
        init: copy the blocks' initial parameter values (True) or leave them uninitialised.
    """

    def __init__(self, max_blocks: int = 4096, seed: int = 0, init: bool = True) -> None:
        if max_blocks < 1:
            raise ValueError(f"max_blocks must be positive, got {max_blocks}")
        self.max_blocks = max_blocks
        self.seed = seed
        self.init = init
        self._blocks: OrderedDict[tuple[Any, ...], nn.Module] = OrderedDict()
        self._keys: weakref.WeakKeyDictionary[nn.Module, tuple[Any, ...]] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        """Blocks currently cached."""
        return len(self._blocks)

    def __getstate__(self) -> dict[str, Any]:
        # A copy sent to another process (a DataLoader worker) starts with an empty cache.
        return {k: v for k, v in self.__dict__.items() if k not in ("_blocks", "_keys")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _blocks=OrderedDict(), _keys=weakref.WeakKeyDictionary())

    def block_key(self, module: nn.Module) -> tuple[Any, ...] | None:
        """Which block ``module`` is a copy of (equal keys: equal modules), or None if it
        is not a block this builder made; ``ghn.graph.SubgraphCache(key=builder.block_key)``
        traces each distinct block once."""
        return self._keys.get(module)

    def build(self, cfg: NetConfig, num_classes: int = 10, imagenet_input: bool = False) -> Network:
        """``cfg`` as a ``Network`` (see the class docstring for how it differs from ``cfg.build``)."""
        with gc_paused():
            return Network(
                num_classes=num_classes,
                imagenet_input=imagenet_input,
                build_block=self.block,
                **vars(cfg),
            )

    def block(self, block: Block) -> nn.Module:
        """A fresh copy of ``block``, constructed on first use."""
        key = (block.factory, block.args)  # the input shape does not change the module
        proto = self._blocks.get(key)
        if proto is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                proto = block.build()
            self._blocks[key] = proto
            if len(self._blocks) > self.max_blocks:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(key)
        module = copy_module(proto, self.init)
        self._keys[module] = key
        return module


def copy_module(module: nn.Module, init: bool = True) -> nn.Module:
    """A deep copy of a freshly constructed module, several times faster than ``copy.deepcopy``.

    New module objects, parameters and buffers (same ``requires_grad``; parameter values
    copied, or left uninitialised with ``init=False``); containers in the modules'
    ``__dict__`` (hook tables, ``_modules``...) are new objects, other attributes are
    shared, which is safe for immutable values (ints, tuples, strings) as modules built by
    ``deepnets.ops`` hold. Not for modules with hooks, tied or non-leaf parameters, or
    tensors outside ``_parameters`` / ``_buffers``.
    """
    new = object.__new__(type(module))
    state = {k: (v.copy() if isinstance(v, (dict, list, set)) else v) for k, v in module.__dict__.items()}
    state["_parameters"] = {
        k: None if p is None else nn.Parameter(
            p.detach().clone() if init else torch.empty_like(p), requires_grad=p.requires_grad
        )
        for k, p in module._parameters.items()
    }
    state["_buffers"] = {k: None if b is None else b.clone() for k, b in module._buffers.items()}
    state["_modules"] = {k: None if m is None else copy_module(m, init) for k, m in module._modules.items()}
    new.__dict__ = state
    return new


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector. Building a network allocates thousands of
    containers, each allocation burst triggers a collection, and each collection traverses
    every object the process holds (a whole training run's): that doubled build time.
    Networks hold no reference cycles, so objects freed before the pause ends are never
    traversed at all."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
