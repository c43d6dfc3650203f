"""G.pt: a generative model of neural-network checkpoints (Peebles et al., 2022).

Pieces, one per module:

- :mod:`.cnn`: the tiny CIFAR-10 CNN (5,370 parameters), flat parameter vectors, batched
  evaluation of many parameter vectors, hidden-unit permutations.
- :mod:`.checkpoints`: collecting, storing (safetensors shards + index) and loading the
  checkpoint data set, its statistics.
- :mod:`.tokenizer`: per-tensor normalisation; parameters into tokens (per-layer chunks,
  or one token per hidden unit).
- :mod:`.transformer`: the denoising transformer (adaLN-Zero conditioning, the "no prompt"
  embedding for classifier-free guidance).
- :mod:`.diffusion`: Gaussian diffusion with x0 prediction, DDPM and DDIM samplers.
- :mod:`.model`: :class:`GPT`, the composition, with ``save_gpt``/``load_gpt``.
- :mod:`.train`: :class:`TrainConfig` and ``train``, the training loop (EMA, atomic
  checkpoints, resume).

Entry points: ``experiments/collect_checkpoints.py`` (collect, stats),
``experiments/train_gpt.py`` and ``experiments/eval_gpt.py`` (configs read by
:mod:`ghn.overrides`).

Typical use::

    from ghn.baselines.gpt import load_gpt, random_init
    gpt = load_gpt("runs/gpt_sgd/ema.safetensors")             # after train_gpt.py
    theta0 = random_init(seed=123)[None]                       # [1, 5370]
    theta1 = gpt.sample(theta0, loss_start=torch.tensor([2.3]),
                        loss_target=torch.tensor([1.5]), method="ddim", steps=10)
    # A model trained with model.prompt_dropout > 0 also takes guidance=w (classifier-free).
"""

from ghn.baselines.gpt.checkpoints import (
    CheckpointData,
    CollectConfig,
    collect,
    dataset_stats,
    load_checkpoints,
    plot_loss_distribution,
)
from ghn.baselines.gpt.cnn import (
    NUM_PARAMS,
    PARAM_SHAPES,
    TinyCNN,
    evaluate_params,
    flatten_params,
    load_flat_params,
    permute_hidden,
    random_init,
    unflatten_params,
)
from ghn.baselines.gpt.diffusion import DiffusionConfig, GaussianDiffusion
from ghn.baselines.gpt.model import GPT, GPTConfig, load_gpt, save_gpt
from ghn.baselines.gpt.tokenizer import ParamTokenizer
from ghn.baselines.gpt.train import TrainConfig, train
from ghn.baselines.gpt.transformer import CheckpointTransformer, TransformerConfig

__all__ = [
    "CheckpointData",
    "CheckpointTransformer",
    "CollectConfig",
    "DiffusionConfig",
    "GPT",
    "GPTConfig",
    "GaussianDiffusion",
    "NUM_PARAMS",
    "PARAM_SHAPES",
    "ParamTokenizer",
    "TinyCNN",
    "TrainConfig",
    "TransformerConfig",
    "collect",
    "dataset_stats",
    "evaluate_params",
    "flatten_params",
    "load_checkpoints",
    "load_flat_params",
    "load_gpt",
    "permute_hidden",
    "plot_loss_distribution",
    "random_init",
    "save_gpt",
    "train",
    "unflatten_params",
]
