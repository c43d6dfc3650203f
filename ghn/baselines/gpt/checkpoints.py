"""The checkpoint data set: collect many training runs of the tiny CNN, store, load, summarise.

Layout of a collection directory::

    index.json                      config, CIFAR-10 source + one entry per finished shard (a summary)
    shard_00000.safetensors         runs [s*R, (s+1)*R): params [R, K, D], test_loss [R, K],
    shard_00001.safetensors         test_err [R, K], step [K]; run settings in the metadata

A shard file only ever appears through an atomic rename of a fully written and fsynced
temporary file, so the set of shard files on disk is the ground truth of what is done: a
collection killed at any moment resumes by re-running the missing shards, and the index
is rebuilt from the shard files before every update.

The index's ``cifar10`` entry, ``{"kind", "path"}``, is the CIFAR-10 source the losses
were measured on (see :func:`ghn.data.cifar10_source`); collections from before it was recorded
have none (``None`` in :attr:`CheckpointData.cifar10`).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ghn.atomic import atomic_write
from ghn.baselines.gpt.cnn import NUM_PARAMS, TinyCNN, evaluate_params, flatten_params, normalize_images, unflatten_params
from ghn.data import cifar10_source
from ghn.overrides import from_mapping

log = logging.getLogger(__name__)

FORMAT = "ghn-gpt-checkpoints-v1"
INDEX = "index.json"


@dataclass
class CollectConfig:
    """What to collect. Fields above ``out_dir`` define the data set; a resumed collection
    must use the same values, except ``num_runs``, which may grow. Defaults: 256 SGD runs of
    400 steps at batch 128 (about one epoch), 11 checkpoints each, about 8 s per run per
    free CPU core."""

    num_runs: int = 256
    runs_per_shard: int = 4
    steps: int = 400
    num_checkpoints: int = 11  # evenly spaced from step 0 (the initialisation) to ``steps``
    batch_size: int = 128
    # Test loss/error are measured on a fixed seeded random subset of the test split for
    # speed (the full 10k test images would cost more than the training itself).
    eval_subset: int = 2000
    eval_seed: int = 0
    train_subset: int | None = None  # use only the first N of a seeded shuffle (tests)
    seed: int = 0
    # G.pt predicts a future checkpoint from the start and the losses alone, so a run's end
    # must be (nearly) a function of its start and learning rate. SGD at lr <= ~0.07 is: from
    # one init, three data orders give updates with cosine >= 0.96 at lr 0.05; SGD at lr
    # 0.1-0.2 (0.4-0.85) and Adam (0.72-0.84 at lr 1.5e-3) are not, and their futures
    # average to networks worse than any of them (see experiments/configs/gpt_collect.yaml).
    optimizers: tuple[str, ...] = ("sgd",)
    sgd_lr: tuple[float, float] = (0.01, 0.07)  # log-uniform range, momentum 0.9
    adam_lr: tuple[float, float] = (5e-4, 5e-3)  # log-uniform range
    weight_decays: tuple[float, ...] = (0.0,)
    out_dir: str = "runs/gpt_sgd_checkpoints"
    workers: int = 2
    data_root: str | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> CollectConfig:
        """From YAML or a data set's index (both store tuples as lists).

        Raises ValueError naming unknown keys and listing the known ones.
        """
        return from_mapping(cls, d)

    def dataset_fields(self) -> dict:
        """The fields that determine the data (everything before ``out_dir``)."""
        d = asdict(self)
        names = [f.name for f in fields(self)]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if names.index(k) < names.index("out_dir")}

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_runs / self.runs_per_shard)


@dataclass
class RunSpec:
    """The settings of one training run, all derived from (collection seed, run id)."""

    run_id: int
    init_seed: int
    data_seed: int
    optimizer: str
    lr: float
    weight_decay: float


def plan_run(cfg: CollectConfig, run_id: int) -> RunSpec:
    """Deterministic settings of run ``run_id``; independent of worker count and order."""
    rng = np.random.default_rng([cfg.seed, run_id])
    init_seed, data_seed = (int(s) for s in rng.integers(0, 2**62, size=2))
    opt = cfg.optimizers[int(rng.integers(len(cfg.optimizers)))]
    lo, hi = cfg.sgd_lr if opt == "sgd" else cfg.adam_lr
    lr = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    wd = float(cfg.weight_decays[int(rng.integers(len(cfg.weight_decays)))])
    return RunSpec(run_id, init_seed, data_seed, opt, lr, wd)


def checkpoint_steps(cfg: CollectConfig) -> list[int]:
    """The K training steps at which a checkpoint is saved, first 0, last ``cfg.steps``."""
    return [round(s) for s in np.linspace(0, cfg.steps, cfg.num_checkpoints)]


def eval_split(n: int, seed: int, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of n test images (normalised [n, 3, 32, 32]) and labels [n].

    Random, not the first n: the test split is ordered by class.
    """
    from ghn.data import load_cifar10

    test = load_cifar10("test", root=root)
    idx = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(seed))[:n]
    return normalize_images(test.images[idx]), test.labels[idx]


# Per-process data cache so that a pool worker loads CIFAR-10 once, not once per shard.
_DATA: dict[tuple, tuple[torch.Tensor, ...]] = {}


def collection_data(cfg: CollectConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training images (uint8 [N, 3, 32, 32]), labels [N], and the evaluation subset
    (normalised [n, 3, 32, 32], labels [n]) of a collection; cached per process."""
    key = (cfg.data_root, cfg.train_subset, cfg.eval_subset, cfg.eval_seed, cfg.seed)
    if key not in _DATA:
        from ghn.data import load_cifar10

        train = load_cifar10("train", root=cfg.data_root)
        images, labels = train.images, train.labels
        if cfg.train_subset is not None:
            idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.train_subset]
            images, labels = images[idx], labels[idx]
        _DATA[key] = (images, labels, *eval_split(cfg.eval_subset, cfg.eval_seed, cfg.data_root))
    return _DATA[key]


def train_run(
    spec: RunSpec, cfg: CollectConfig, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Train one TinyCNN; return its checkpoints as flat params [K, D].

    ``images``: uint8 [N, 3, 32, 32] training images, ``labels``: [N]. Mini-batches are
    drawn without replacement, reshuffled every epoch, from the run's own data seed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        model = TinyCNN()
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    elif spec.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}")
    gen = torch.Generator().manual_seed(spec.data_seed)
    save_at = set(checkpoint_steps(cfg))
    ckpts, order, pos = [], torch.randperm(len(labels), generator=gen), 0
    for step in range(cfg.steps + 1):
        if step in save_at:
            ckpts.append(flatten_params(model))
        if step == cfg.steps:
            break
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(labels), generator=gen), 0
        idx = order[pos : pos + cfg.batch_size]
        pos += cfg.batch_size
        loss = F.cross_entropy(model(normalize_images(images[idx])), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.stack(ckpts)


def shard_path(out_dir: str | Path, shard_id: int) -> Path:
    return Path(out_dir) / f"shard_{shard_id:05d}.safetensors"


def collect_shard(cfg: CollectConfig, shard_id: int) -> int:
    """Train the runs of one shard and write it atomically. Returns ``shard_id``."""
    torch.set_num_threads(1)  # parallelism comes from processes; threads would oversubscribe
    images, labels, test_x, test_y = collection_data(cfg)
    run_ids = range(shard_id * cfg.runs_per_shard, min((shard_id + 1) * cfg.runs_per_shard, cfg.num_runs))
    specs = [plan_run(cfg, r) for r in run_ids]
    params = torch.stack([train_run(s, cfg, images, labels) for s in specs])  # [R, K, D]
    loss, err = evaluate_params(params.flatten(0, 1), test_x, test_y)
    tensors = {
        "params": params.contiguous(),
        "test_loss": loss.view(len(specs), -1).contiguous(),
        "test_err": err.view(len(specs), -1).contiguous(),
        "step": torch.tensor(checkpoint_steps(cfg), dtype=torch.int64),
        "run_id": torch.tensor(list(run_ids), dtype=torch.int64),
    }
    meta = {"format": FORMAT, "runs": json.dumps([asdict(s) for s in specs])}
    path = shard_path(cfg.out_dir, shard_id)
    # Unique temp names (atomic_write): an orphaned worker of a killed collection may write the same shard.
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return shard_id


def _write_json_atomic(obj: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def _valid_shard(path: Path, cfg: CollectConfig, shard_id: int) -> bool:
    """Whether a shard file is complete and matches ``cfg``. Reads only the header."""
    n_runs = min(cfg.runs_per_shard, cfg.num_runs - shard_id * cfg.runs_per_shard)
    try:
        with safe_open(str(path), framework="pt") as f:
            ok = f.metadata().get("format") == FORMAT
            ok = ok and f.get_slice("params").get_shape() == [n_runs, cfg.num_checkpoints, NUM_PARAMS]
            return ok and f.get_slice("test_loss").get_shape() == [n_runs, cfg.num_checkpoints]
    except Exception:  # noqa: BLE001 - any unreadable file counts as not done
        return False


def _shard_summary(path: Path) -> dict:
    t = load_file(str(path))
    return {
        "file": path.name,
        "runs": t["run_id"].tolist(),
        "final_test_loss": t["test_loss"][:, -1].tolist(),
        "final_test_err": t["test_err"][:, -1].tolist(),
    }


def _scan(cfg: CollectConfig, known: dict[int, dict]) -> dict[int, dict]:
    """Summaries of the valid shards on disk; removes temp files and invalid shards.

    ``known`` are summaries from a previous index, reused for shards that are still valid.
    """
    out = Path(cfg.out_dir)
    for tmp in out.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    done = {}
    for s in range(cfg.num_shards):
        p = shard_path(out, s)
        if not p.exists():
            continue
        if _valid_shard(p, cfg, s):
            done[s] = known[s] if s in known else _shard_summary(p)
        else:
            log.warning("removing invalid shard %s", p)
            p.unlink()
    return done


def collect(cfg: CollectConfig) -> Path:
    """Collect (or resume collecting) the data set described by ``cfg``; returns its directory."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    known: dict[int, dict] = {}
    source: dict[str, str] | None = None
    if index_path.exists():
        old_index = json.loads(index_path.read_text())
        old = old_index["config"]
        # num_runs may change: runs are planned per run id, so growing a collection only
        # adds shards (a partial last shard no longer validates and is re-collected).
        diff = {k: (old.get(k), v) for k, v in cfg.dataset_fields().items() if old.get(k) != v and k != "num_runs"}
        if diff:
            raise ValueError(f"{out} holds a different collection (stored, requested): {diff}")
        known = {int(s): v for s, v in old_index["shards"].items()}
        source = old_index.get("cifar10")  # absent in collections from before it was recorded
    done = _scan(cfg, known)
    index = {"format": FORMAT, "config": cfg.dataset_fields(), "cifar10": source, "complete": False, "shards": done}
    _write_json_atomic(index, index_path)
    pending = [s for s in range(cfg.num_shards) if s not in done]
    if pending:
        current = cifar10_source(cfg.data_root)
        if not done:
            index["cifar10"] = current  # written with the first finished shard
        elif source is not None and source != current:
            # Not an error: the same images may have moved, or be another copy of them.
            log.warning("shards so far were measured on CIFAR-10 from %s, the remaining %d will be on %s; "
                        "pass data_root=%s to keep one source", source, len(pending), current, source["path"])
    log.info("%d/%d shards done, %d to collect with %d workers", len(done), cfg.num_shards, len(pending), cfg.workers)
    bar = tqdm(total=cfg.num_shards, initial=len(done), desc="shards", unit="shard")

    def finish(s: int) -> None:
        done[s] = _shard_summary(shard_path(out, s))
        _write_json_atomic(index, index_path)
        bar.update()

    if cfg.workers <= 1:
        for s in pending:
            finish(collect_shard(cfg, s))
    elif pending:
        # spawn: fork after torch has started its thread pools can deadlock.
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            for s in pool.imap_unordered(_collect_shard_star, [(cfg, s) for s in pending]):
                finish(s)
            # Let the workers exit: leaving the block terminates them, which skips their
            # finalizers and leaks their semaphores (a resource_tracker warning).
            pool.close()
            pool.join()
    bar.close()
    index["complete"] = len(done) == cfg.num_shards
    _write_json_atomic(index, index_path)
    return out


def _collect_shard_star(args: tuple[CollectConfig, int]) -> int:
    return collect_shard(*args)


@dataclass
class CheckpointData:
    """A loaded data set. ``params`` [R, K, D]; ``test_loss``, ``test_err`` [R, K]; ``step`` [K].

    ``cifar10``: the CIFAR-10 source the losses were measured on (see
    :func:`cifar10_source`); None for collections that did not record it.
    """

    params: torch.Tensor
    test_loss: torch.Tensor
    test_err: torch.Tensor
    step: torch.Tensor
    runs: list[RunSpec]
    config: dict = field(default_factory=dict)
    cifar10: dict[str, str] | None = None

    @property
    def num_runs(self) -> int:
        return self.params.shape[0]

    def to(self, device: str | torch.device) -> CheckpointData:
        return replace(self, params=self.params.to(device), test_loss=self.test_loss.to(device),
                       test_err=self.test_err.to(device))

    def sample_pairs(
        self, batch_size: int, start_init_prob: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random (start, future) checkpoint pairs of one run each, future index ≥ start index.

        The start is the initialisation with probability ``start_init_prob``, otherwise a
        uniformly drawn checkpoint. Returns start params [B, D], future params [B, D], start
        loss [B], future loss [B].
        """
        dev, k = self.params.device, self.params.shape[1]
        r = torch.randint(self.num_runs, (batch_size,), device=dev, generator=generator)
        i = torch.randint(k, (batch_size,), device=dev, generator=generator)
        i = torch.where(torch.rand(batch_size, device=dev, generator=generator) < start_init_prob, 0, i)
        j = i + (torch.rand(batch_size, device=dev, generator=generator) * (k - i)).long()
        return self.params[r, i], self.params[r, j], self.test_loss[r, i], self.test_loss[r, j]


def load_checkpoints(out_dir: str | Path, require_complete: bool = False) -> CheckpointData:
    """Load every valid shard of a collection. Runs with non-finite values are dropped."""
    out = Path(out_dir)
    index = json.loads((out / INDEX).read_text())
    if require_complete and not index["complete"]:
        raise RuntimeError(f"{out} is an incomplete collection; run the collection again to finish it")
    parts: dict[str, list[torch.Tensor]] = {"params": [], "test_loss": [], "test_err": []}
    runs: list[RunSpec] = []
    step = None
    for s in sorted(index["shards"], key=int):
        p = out / index["shards"][s]["file"]
        t = load_file(str(p))
        with safe_open(str(p), framework="pt") as f:
            runs += [RunSpec(**r) for r in json.loads(f.metadata()["runs"])]
        for k in parts:
            parts[k].append(t[k])
        step = t["step"]
    if not runs:
        raise RuntimeError(f"no shards in {out}")
    data = {k: torch.cat(v) for k, v in parts.items()}
    ok = torch.isfinite(data["params"]).all(dim=(1, 2)) & torch.isfinite(data["test_loss"]).all(dim=1)
    if not ok.all():
        log.warning("dropping %d runs with non-finite parameters or losses", int((~ok).sum()))
    return CheckpointData(
        params=data["params"][ok],
        test_loss=data["test_loss"][ok],
        test_err=data["test_err"][ok],
        step=step,
        runs=[r for r, keep in zip(runs, ok.tolist()) if keep],
        config=index["config"],
        cifar10=index.get("cifar10"),
    )


def update_stats(
    data: CheckpointData, holdout: float = 0.2, ridges: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0), max_runs: int = 2048
) -> dict:
    """How far runs move and how much of their move a linear map of the init predicts.

    Per tensor of the tiny CNN: ``relative_move``, the median over runs of
    ||final - init|| / ||init||; ``linear_r2``, the held-out R² of ridge regression of each
    run's update (final - init) on its whole init vector, fitted on the first runs and
    scored on the last ``holdout`` share of them, best over ``ridges`` (in units of the
    kernel's mean diagonal; picked on the held-out runs, so if anything optimistic). An R²
    near 0 means the update is not a linear function of the start that this many runs can
    reveal; G.pt must learn a nonlinear one from them. ``linear_r2`` values are None when
    fewer than 8 runs remain to fit or 2 to score (fewer than 10 runs at the default).
    ``heldout_init_in_span``: the median share of a held-out init's squared norm (centred)
    inside the span of the fitting runs' inits, the only part a linear map fitted on them
    can use; random inits of D values give about fit_runs / D. The fit uses the first
    ``max_runs`` runs (its kernel is runs x runs: 16 GB at the published tens of thousands).
    """
    init, final = data.params[:, 0].double(), data.params[:, -1].double()
    m = min(data.num_runs, max_runs)
    n_test = int(round(holdout * m))
    n_train = m - n_test
    move = {k: (f - i).flatten(1).norm(dim=1) / i.flatten(1).norm(dim=1).clamp_min(1e-12)
            for (k, i), f in zip(unflatten_params(init).items(), unflatten_params(final).values())}
    r2: dict[str, float | None] = {k: None for k in move}
    best_ridge = in_span = None
    if n_train >= 8 and n_test >= 2:
        x, y = init[:m] - init[:n_train].mean(0), final[:m] - init[:m]
        y = y - y[:n_train].mean(0)
        k_train, k_test = x[:n_train] @ x[:n_train].T, x[n_train:] @ x[:n_train].T
        best = None
        eye = torch.eye(n_train, dtype=x.dtype)
        for lam in ridges:  # kernel (dual) form: runs, not parameters, set the system's size
            pred = k_test @ torch.linalg.solve(k_train + lam * k_train.diagonal().mean() * eye, y[:n_train])
            res = {k: 1 - (p - t).square().sum().item() / t.square().sum().clamp_min(1e-24).item()
                   for (k, p), t in zip(unflatten_params(pred).items(), unflatten_params(y[n_train:]).values())}
            if best is None or sum(res.values()) > sum(best.values()):
                best, best_ridge = res, lam
        r2 = dict(best)
        proj2 = (k_test * torch.linalg.solve(k_train + 1e-9 * k_train.diagonal().mean() * eye, k_test.T).T).sum(1)
        in_span = (proj2 / x[n_train:].square().sum(1)).median().item()
    return {
        "relative_move": {k: v.median().item() for k, v in move.items()},
        "linear_r2": r2,
        "ridge": best_ridge,
        "heldout_init_in_span": in_span,
        "fit_runs": n_train,
        "heldout_runs": n_test,
    }


def dataset_stats(data: CheckpointData) -> dict:
    """Summary statistics of a data set (losses/errors at init and at the final checkpoint,
    and how far and how predictably runs move: :func:`update_stats`)."""

    def q(x: torch.Tensor) -> dict:
        qs = torch.quantile(x.double(), torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
        return dict(zip(["min", "p10", "median", "p90", "max"], qs)) | {"mean": x.double().mean().item()}

    by_opt = {}
    for opt in sorted({r.optimizer for r in data.runs}):
        sel = torch.tensor([r.optimizer == opt for r in data.runs])
        by_opt[opt] = {"runs": int(sel.sum()), "final_test_err_median": data.test_err[sel, -1].median().item()}
    return {
        "runs": data.num_runs,
        "checkpoints_per_run": data.params.shape[1],
        "params_per_checkpoint": data.params.shape[2],
        "steps": data.step.tolist(),
        "init_test_loss": q(data.test_loss[:, 0]),
        "final_test_loss": q(data.test_loss[:, -1]),
        "final_test_err": q(data.test_err[:, -1]),
        "all_test_loss": q(data.test_loss.flatten()),
        "best_test_loss": data.test_loss.min().item(),
        "by_optimizer": by_opt,
        "update": update_stats(data),
    }


def plot_loss_distribution(data: CheckpointData, path: str | Path) -> None:
    """Histogram of test losses: all checkpoints, initialisations and final checkpoints."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(data.test_loss.min().item(), data.test_loss.max().item(), 50)
    ax.hist(data.test_loss.flatten().numpy(), bins=bins, alpha=0.5, label="all checkpoints")
    ax.hist(data.test_loss[:, 0].numpy(), bins=bins, alpha=0.6, label="initialisation")
    ax.hist(data.test_loss[:, -1].numpy(), bins=bins, alpha=0.6, label="final checkpoint")
    ax.set_xlabel("test loss (seeded test subset)")
    ax.set_ylabel("checkpoints")
    ax.set_title(f"{data.num_runs} runs x {data.params.shape[1]} checkpoints")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
