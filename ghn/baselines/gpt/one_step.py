"""One-step optimisation with G.pt: fresh random initialisations, one sample each.

Used by ``experiments/eval_gpt.py`` (the full evaluation) and by the G.pt row of
``experiments/eval_ghn.py`` (the CIFAR-10 benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ghn.baselines.gpt.checkpoints import CheckpointData, CollectConfig, collection_data
from ghn.baselines.gpt.cnn import evaluate_params, random_init
from ghn.baselines.gpt.model import GPT


def eval_init_seeds(n: int, seed: int) -> list[int]:
    """Init seeds for evaluation, from a namespace disjoint from the data set's runs
    (which use ``default_rng([collection seed, run id])``)."""
    rng = np.random.default_rng([0xE7A1, seed])
    return [int(s) for s in rng.integers(0, 2**62, size=n)]


@dataclass
class OneStep:
    """Inits, their losses on the data set's evaluation images, and G.pt's samples.

    ``seeds``: N init seeds; ``inits``, ``params``: [N, D] flat parameters before and
    after the step; ``init_loss``, ``init_err``: [N]; ``prompt``: the prompted test loss."""

    seeds: list[int]
    inits: torch.Tensor
    init_loss: torch.Tensor
    init_err: torch.Tensor
    prompt: float
    params: torch.Tensor


def one_step(
    gpt: GPT,
    data: CheckpointData,
    num_inits: int,
    seed: int = 0,
    method: str = "ddim",
    steps: int = 10,
    prompt: float | None = None,
    generator: torch.Generator | None = None,
    data_root: str | None = None,
    guidance: float = 1.0,
) -> OneStep:
    """Sample one future checkpoint for each of `num_inits` unseen random inits, prompted
    with `prompt` (default: the lowest test loss in `data`). `method`/`steps` choose the
    sampler and `guidance` its classifier-free guidance scale (see `GPT.sample`);
    `data_root` the CIFAR-10 source of the inits' losses (default: `load_cifar10`'s search).
    Raises RuntimeError if an init seed is a training run's."""
    seeds = eval_init_seeds(num_inits, seed)
    if set(seeds) & {r.init_seed for r in data.runs}:
        raise RuntimeError("an evaluation init seed is also a training run's seed")
    _, _, test_x, test_y = collection_data(replace(CollectConfig.from_dict(data.config), data_root=data_root))
    inits = torch.stack([random_init(s) for s in seeds])
    init_loss, init_err = evaluate_params(inits, test_x, test_y)
    prompt = data.test_loss.min().item() if prompt is None else prompt
    device = next(gpt.parameters()).device
    with torch.no_grad():
        params = gpt.sample(inits.to(device), init_loss.to(device), torch.full_like(init_loss, prompt).to(device),
                            method=method, steps=steps, generator=generator, guidance=guidance).cpu()
    return OneStep(seeds, inits, init_loss, init_err, prompt, params)
