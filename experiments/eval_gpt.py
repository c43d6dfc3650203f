"""Evaluate a trained G.pt: one-step optimisation and prompt alignment.

    python experiments/eval_gpt.py --config experiments/configs/gpt_eval.yaml
    python experiments/eval_gpt.py --config experiments/configs/gpt_eval.yaml \
        --set model=runs/gpt_units/ema.safetensors data=runs/gpt_sgd_640 out=results/gpt_units ddpm_inits=0

Writes ``<out>/gpt_eval.json``, ``<out>/gpt_eval.md`` and ``<out>/gpt_prompt_alignment.png``.
All losses and errors are measured on the data set's own fixed, seeded subset of the
CIFAR-10 test split, so they are directly comparable to the data set's values when read
from the same CIFAR-10 source. ``data_root`` picks that source (a torchvision root, an
ImageFolder folder or a tar archive; default: ``ghn.data.load_cifar10``'s search, which
tries ``$GHN_CIFAR10`` first); a warning says when it differs from the one the collection
recorded (older collections record none).

One-step optimisation: ``num_inits`` fresh random initialisations (seeds from a namespace
disjoint from the data set's runs; checked) are each given one G.pt sample prompted with
the best test loss in the data set, then again with each DDIM step count of ``ddim_sweep``
(same inits, same starting noise). SGD from the same inits (the optimiser settings of the
data set's best run) measures how many steps reach the same loss.
Prompt alignment: prompts evenly spaced over the data set's loss range, ``sweep_inits``
inits each; R² of achieved against prompted loss with the identity as the model.
Classifier-free guidance: ``guidance`` scales every sample; ``guidance_sweep`` repeats the
one-step figure and prompt alignment for each listed scale, from the same inits and noise
(both need a model trained with ``model.prompt_dropout`` > 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ghn.baselines.gpt import CollectConfig, evaluate_params, load_checkpoints, load_gpt
from ghn.baselines.gpt.checkpoints import RunSpec, checkpoint_steps, collection_data, train_run
from ghn.baselines.gpt.one_step import one_step
from ghn.data import cifar10_source
from ghn.overrides import add_config_arguments, from_mapping, load_config, parsed_overrides

log = logging.getLogger("eval_gpt")


@dataclass
class EvalConfig:
    model: str = "runs/gpt_sgd/ema.safetensors"  # written by train_gpt.py
    data: str = "runs/gpt_sgd_checkpoints"  # the checkpoint data set it was trained on
    # CIFAR-10 source for test losses and SGD; None: load_cifar10's search ($GHN_CIFAR10 first).
    data_root: str | None = None
    out: str = "results"
    num_inits: int = 100  # unseen inits for the one-step figure
    sampler: str = "ddim"  # "ddim" (ddim_steps deterministic steps) or "ddpm" (every diffusion step)
    ddim_steps: int = 10
    # The one-step figure again for each of these DDIM step counts, from the same inits and
    # starting noise as the main one ([] skips it): how many sampler steps pay.
    ddim_sweep: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20])
    ddpm_inits: int = 16  # also report full DDPM on this many inits (0: skip)
    sgd_inits: int = 10  # inits used to count SGD steps to match
    sgd_every: int = 20  # SGD loss is checked every this many steps
    sgd_max_steps: int | None = None  # None: twice the data set's run length
    # Classifier-free guidance scale of every sample (1: none; other values need a model
    # trained with model.prompt_dropout > 0).
    guidance: float = 1.0
    # The one-step figure and prompt alignment again for each of these guidance scales, from
    # the same inits and noise as the main ones ([] skips it).
    guidance_sweep: list[float] = field(default_factory=list)
    seen_inits: int = 32  # training runs' inits used for the fit check
    sweep_points: int = 16  # prompts in the prompt-alignment sweep
    sweep_inits: int = 16  # inits per prompt
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def from_dict(cls, d: dict | None) -> EvalConfig:
        """From YAML (with overrides). Raises ValueError naming an unknown key or a bad value."""
        cfg = from_mapping(cls, d)
        minimum = {"num_inits": 1, "ddim_steps": 1, "ddpm_inits": 0, "sgd_inits": 0, "sgd_every": 1,
                   "sgd_max_steps": 1, "seen_inits": 0, "sweep_points": 2, "sweep_inits": 1}
        for key, low in minimum.items():
            value = getattr(cfg, key)
            if value is None and key == "sgd_max_steps":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
        if cfg.sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be 'ddim' or 'ddpm', got {cfg.sampler!r}")
        if not isinstance(cfg.ddim_sweep, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in cfg.ddim_sweep):
            raise ValueError(f"ddim_sweep must be a list of integers >= 1, got {cfg.ddim_sweep!r}")
        scales = [cfg.guidance, *cfg.guidance_sweep] if isinstance(cfg.guidance_sweep, list) else None
        if scales is None or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in scales):
            raise ValueError(f"guidance must be a number >= 0 and guidance_sweep a list of them, got "
                             f"{cfg.guidance!r} and {cfg.guidance_sweep!r}")
        return cfg


def r2_identity(prompted: np.ndarray, achieved: np.ndarray) -> float:
    """Coefficient of determination of ``achieved`` with ``achieved = prompted`` as the fit."""
    ss_res = np.sum((achieved - prompted) ** 2)
    ss_tot = np.sum((achieved - achieved.mean()) ** 2)
    return float(1 - ss_res / ss_tot)


def training_record(model_path: str) -> dict | None:
    """Steps and training time (seconds, summed over resumes) of the last complete
    training log line next to the model, if any."""
    metrics = Path(model_path).parent / "metrics.jsonl"
    if not metrics.exists():
        return None
    for line in reversed(metrics.read_text().splitlines()):
        try:
            last = json.loads(line)
        except json.JSONDecodeError:  # cut short by a kill while training
            continue
        return {"steps": last["step"], "seconds": last["time"]}
    return None


def summarise(loss: torch.Tensor, err: torch.Tensor) -> dict:
    return {
        "loss_median": loss.median().item(),
        "loss_mean": loss.mean().item(),
        "err_median": err.median().item(),
        "err_mean": err.mean().item(),
        "n": loss.numel(),
    }


def sgd_steps_to_match(
    cfg: CollectConfig, spec: RunSpec, target_loss: float, max_steps: int, every: int, test_x, test_y
) -> int | None:
    """First SGD step (checked about every ``every`` steps) whose test loss ≤ target; None if never."""
    images, labels, _, _ = collection_data(cfg)
    run_cfg = replace(cfg, steps=max_steps, num_checkpoints=max_steps // every + 1)
    ckpts = train_run(spec, run_cfg, images, labels)  # [max_steps // every + 1, D]
    loss, _ = evaluate_params(ckpts, test_x, test_y)
    hit = torch.nonzero(loss <= target_loss)
    return checkpoint_steps(run_cfg)[int(hit[0, 0])] if len(hit) else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, "EvalConfig")
    cli = p.parse_args(argv)
    try:
        args = EvalConfig.from_dict(load_config(cli.config, parsed_overrides(cli)))
    except ValueError as e:  # a malformed override, an unknown key or a bad value: say which and stop
        p.error(str(e))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_checkpoints(args.data)
    cfg = replace(CollectConfig.from_dict(data.config), data_root=args.data_root)
    _, _, test_x, test_y = collection_data(cfg)
    source = cifar10_source(args.data_root)
    if data.cifar10 is None:
        log.info("%s does not record its CIFAR-10 source; evaluating on %s", args.data, source)
    elif data.cifar10 != source:
        log.warning("%s was measured on CIFAR-10 from %s but the evaluation reads %s, so their losses may not be "
                    "comparable; set data_root=%s to use the collection's", args.data, data.cifar10, source,
                    data.cifar10["path"])
    gpt = load_gpt(args.model, args.device)
    if gpt.cfg.prompt_dropout == 0 and any(w != 1 for w in [args.guidance, *args.guidance_sweep]):
        p.error(f"{args.model} was trained without prompt dropout, so it cannot be guided: set guidance=1 and "
                f"guidance_sweep=[] (got {args.guidance} and {args.guidance_sweep}), or train with model.prompt_dropout=0.1")

    def noise(part: int) -> torch.Generator:
        """The sampling noise of one part of the evaluation, independent of the others, so
        that skipping a part (``ddpm_inits=0``) leaves the rest unchanged. Part 0, the
        one-step figure, is seeded with ``seed`` itself, as in evaluations from before."""
        seed = args.seed if part == 0 else int(np.random.SeedSequence([args.seed, part]).generate_state(1)[0])
        return torch.Generator(device=args.device).manual_seed(seed)

    def sample(start: torch.Tensor, ls: torch.Tensor, lt: torch.Tensor, gen: torch.Generator,
               method: str = args.sampler, steps: int = args.ddim_steps, guidance: float = args.guidance) -> torch.Tensor:
        d = args.device
        x = gpt.sample(start.to(d), ls.to(d), lt.to(d), method=method, steps=steps, generator=gen, guidance=guidance)
        return x.cpu()

    # One-step optimisation, prompted with the data set's best loss.
    t0 = time.time()
    step = one_step(gpt, data, args.num_inits, args.seed, args.sampler, args.ddim_steps, generator=noise(0),
                    data_root=args.data_root, guidance=args.guidance)
    one_step_time = time.time() - t0  # the inits' losses and the sampling
    seeds, inits, init_loss, init_err, best_loss, theta = (
        step.seeds, step.inits, step.init_loss, step.init_err, step.prompt, step.params)
    final_loss, final_err = data.test_loss[:, -1], data.test_err[:, -1]
    b = int(final_loss.argmin())
    finite = torch.isfinite(theta).all(dim=1)
    ach_loss, ach_err = evaluate_params(theta, test_x, test_y)
    results: dict = {
        "eval_config": asdict(args),
        "data": {"dir": args.data, "runs": data.num_runs, "checkpoints_per_run": data.params.shape[1],
                 "config": data.config, "eval_images": int(test_y.numel()), "cifar10": source,
                 "collection_cifar10": data.cifar10},
        "model": {"path": args.model, "config": asdict(gpt.cfg),
                  "params": sum(p.numel() for p in gpt.parameters()), "training": training_record(args.model)},
        "prompt_loss": best_loss,
        "initial": summarise(init_loss, init_err),
        f"one_step_{args.sampler}": summarise(ach_loss, ach_err)
        | {"finite": int(finite.sum()), "seconds": one_step_time,
           "ddim_steps": args.ddim_steps if args.sampler == "ddim" else None, "guidance": args.guidance},
        "dataset_best_final": {"loss": final_loss[b].item(), "err": final_err[b].item(), "run": data.runs[b].run_id},
        "dataset_median_final": {"loss": final_loss.median().item(), "err": final_err.median().item()},
        "dataset_best_any_checkpoint_loss": best_loss,
    }
    log.info("one-step: median err %.4f (init %.4f, data median final %.4f)",
             ach_err.median(), init_err.median(), final_err.median())

    def one_step_again(**sampler: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The one-step figure's inits, prompt and starting noise (part 0's) through other
        sampler settings: params [N, D] and their test losses and errors [N]."""
        th = sample(inits, init_loss, torch.full_like(init_loss, best_loss), noise(0), **sampler)
        return th, *evaluate_params(th, test_x, test_y)

    # Other DDIM step counts: the row with ddim_steps equal to the main figure's reproduces it.
    results["one_step_ddim_sweep"] = []
    for n in args.ddim_sweep:
        t0 = time.time()
        th, sl, se = one_step_again(method="ddim", steps=n)
        results["one_step_ddim_sweep"].append({"ddim_steps": n} | summarise(sl, se) | {
            "finite": int(torch.isfinite(th).all(dim=1).sum()), "sample_seconds": time.time() - t0})
        log.info("one-step DDIM, %d steps: median err %.4f", n, se.median())

    if args.ddpm_inits and args.sampler == "ddim":  # with sampler ddpm the main figure is this row already
        n = min(args.ddpm_inits, args.num_inits)
        t0 = time.time()
        th = sample(inits[:n], init_loss[:n], torch.full((n,), best_loss), noise(1), method="ddpm")
        dl, de = evaluate_params(th, test_x, test_y)
        results["one_step_ddpm"] = summarise(dl, de) | {"sample_seconds": time.time() - t0,
                                                         "diffusion_steps": gpt.diffusion.num_steps}
        log.info("one-step DDPM on %d inits: median err %.4f", n, de.median())

    # Fit check: inits of training runs, each prompted with its own run's final loss. A
    # model that fails here has not learned its training pairs; one that passes here but
    # not on unseen inits has not generalised.
    rows = torch.linspace(0, data.num_runs - 1, min(args.seen_inits, data.num_runs)).round().long()
    seen_start, seen_future = data.params[rows, 0], data.params[rows, -1]
    th = sample(seen_start, data.test_loss[rows, 0], data.test_loss[rows, -1], noise(2))
    sl, se = evaluate_params(th, test_x, test_y)
    norm = gpt.tokenizer.normalize
    miss = (norm(th) - norm(seen_future)).square().mean() / (norm(seen_start) - norm(seen_future)).square().mean()
    results["seen_inits_own_final_prompt"] = summarise(sl, se) | {
        "target": summarise(data.test_loss[rows, -1], data.test_err[rows, -1]),
        # Squared distance to the run's own final checkpoint, relative to the start's.
        "relative_sq_error": miss.item(),
    }
    log.info("training inits prompted with their own final loss: median loss %.4f (target %.4f)",
             sl.median(), data.test_loss[rows, -1].median())

    # SGD from the same inits with the best run's optimiser settings, to match G.pt's loss.
    best = data.runs[b]
    max_steps = args.sgd_max_steps or 2 * cfg.steps
    steps_needed = []
    for i in range(min(args.sgd_inits, args.num_inits)):
        spec = RunSpec(-1, seeds[i], seeds[i] + 1, best.optimizer, best.lr, best.weight_decay)
        steps_needed.append(sgd_steps_to_match(cfg, spec, ach_loss[i].item(), max_steps, args.sgd_every, test_x, test_y))
    reached = [s for s in steps_needed if s is not None]
    results["sgd_to_match"] = {
        "optimizer": {"name": best.optimizer, "lr": best.lr, "weight_decay": best.weight_decay,
                      "batch_size": cfg.batch_size},
        "steps_per_init": steps_needed,
        "median_steps": float(np.median(reached)) if len(reached) == len(steps_needed) else None,
        "reached": f"{len(reached)}/{len(steps_needed)} within {max_steps} steps",
        "resolution_steps": args.sgd_every,
    }

    # Prompt alignment sweep over the data set's loss range.
    lo, hi = data.test_loss.min().item(), data.test_loss.max().item()
    prompts = torch.linspace(lo, hi, args.sweep_points)
    m = min(args.sweep_inits, args.num_inits)
    start, ls = inits[:m].repeat(args.sweep_points, 1), init_loss[:m].repeat(args.sweep_points)
    lt = prompts.repeat_interleave(m)

    def alignment(guidance: float) -> tuple[dict, np.ndarray, np.ndarray]:
        """Prompt alignment at one guidance scale (same inits and noise for every scale):
        the results entry and the finite samples' prompted and achieved losses."""
        sw_loss, _ = evaluate_params(sample(start, ls, lt, noise(3), guidance=guidance), test_x, test_y)
        ok = torch.isfinite(sw_loss)
        prompted, achieved = lt[ok].numpy(), sw_loss[ok].numpy()
        per_prompt = sw_loss.view(args.sweep_points, m).median(dim=1).values.numpy()
        return {
            "r2_identity_all_samples": r2_identity(prompted, achieved),
            "r2_identity_per_prompt_median": r2_identity(prompts.numpy(), per_prompt),
            # Signed: a model that moves further the lower the prompt, but the wrong way, shows r < 0.
            "pearson_r_all_samples": float(np.corrcoef(prompted, achieved)[0, 1]),
            "prompts": prompts.tolist(),
            "achieved_median": per_prompt.tolist(),
            "samples": int(ok.sum()),
            "non_finite": int((~ok).sum()),
            "guidance": guidance,
        }, prompted, achieved

    results["prompt_alignment"], prompted, achieved = alignment(args.guidance)

    # Guidance scales: the one-step figure and prompt alignment again.
    results["guidance_sweep"] = []
    for w in args.guidance_sweep:
        _, gl, ge = one_step_again(guidance=w)
        results["guidance_sweep"].append({"guidance": w, "one_step": summarise(gl, ge),
                                          "prompt_alignment": alignment(w)[0]})
        log.info("guidance %g: one-step median err %.4f, prompt R² %.3f", w, ge.median(),
                 results["guidance_sweep"][-1]["prompt_alignment"]["r2_identity_all_samples"])
    results["eval_seconds"] = time.time() - t_start
    (out / "gpt_eval.json").write_text(json.dumps(results, indent=1))
    plot_alignment(prompted, achieved, out / "gpt_prompt_alignment.png", results)
    (out / "gpt_eval.md").write_text(markdown(results, args))
    log.info("wrote %s", out / "gpt_eval.md")


def plot_alignment(prompted: np.ndarray, achieved: np.ndarray, path: Path, results: dict) -> None:
    """Achieved against prompted loss: the samples, their per-prompt medians and, when
    guidance scales were swept, each scale's medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pa = results["prompt_alignment"]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(prompted, achieved, s=6, alpha=0.3, label="samples")
    ax.plot(pa["prompts"], pa["achieved_median"], "o-", color="C1", label="median per prompt")
    for k, row in enumerate(results["guidance_sweep"]):
        g = row["prompt_alignment"]
        ax.plot(g["prompts"], g["achieved_median"], ".-", color=f"C{k + 2}", lw=1,
                label=f"median, guidance {g['guidance']:g} (R² {g['r2_identity_all_samples']:.2f})")
    lim = [min(prompted.min(), achieved.min()), max(prompted.max(), achieved.max())]
    ax.plot(lim, lim, "k--", lw=1, label="achieved = prompted")
    ax.set_xlabel("prompted test loss")
    ax.set_ylabel("achieved test loss")
    guided = f", guidance {pa['guidance']:g}" if pa["guidance"] != 1 else ""
    ax.set_title(f"G.pt prompt alignment{guided}, R² = {pa['r2_identity_all_samples']:.3f}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_table(r: dict) -> list[str]:
    """Markdown lines for the DDIM step-count sweep (none when it was skipped)."""
    if not r["one_step_ddim_sweep"]:
        return []
    return [
        "One step from the same inits and starting noise, by DDIM step count:",
        "",
        "| DDIM steps | median test loss | median test error | sampling seconds |",
        "|---|---|---|---|",
        *[f"| {row['ddim_steps']} | {row['loss_median']:.4f} | {100 * row['err_median']:.2f}% | "
          f"{row['sample_seconds']:.1f} |" for row in r["one_step_ddim_sweep"]],
        "",
    ]


def guidance_table(r: dict) -> list[str]:
    """Markdown lines for the guidance-scale sweep (none when it was skipped)."""
    if not r["guidance_sweep"]:
        return []
    return [
        "One step (same inits and noise as above) and prompt alignment, by classifier-free guidance scale:",
        "",
        "| guidance | one-step median test loss | one-step median test error | prompt R² (samples) "
        "| prompt R² (per-prompt medians) | Pearson r |",
        "|---|---|---|---|---|---|",
        *[f"| {row['guidance']:g} | {row['one_step']['loss_median']:.4f} | {100 * row['one_step']['err_median']:.2f}% | "
          f"{row['prompt_alignment']['r2_identity_all_samples']:.3f} | "
          f"{row['prompt_alignment']['r2_identity_per_prompt_median']:.3f} | "
          f"{row['prompt_alignment']['pearson_r_all_samples']:.3f} |" for row in r["guidance_sweep"]],
        "",
    ]


def markdown(r: dict, args: EvalConfig) -> str:
    one = r[f"one_step_{args.sampler}"]
    sampler = f"DDIM, {args.ddim_steps} steps" if args.sampler == "ddim" else "DDPM"
    if args.guidance != 1:
        sampler += f", guidance {args.guidance:g}"
    rows = [
        ("random init (unseen)", r["initial"]["loss_median"], r["initial"]["err_median"], r["initial"]["n"]),
        (f"G.pt one step ({sampler})", one["loss_median"], one["err_median"], one["n"]),
    ]
    if "one_step_ddpm" in r:
        d = r["one_step_ddpm"]
        rows.append((f"G.pt one step (DDPM, {d['diffusion_steps']} steps)", d["loss_median"], d["err_median"], d["n"]))
    rows += [
        ("data set: median final checkpoint", r["dataset_median_final"]["loss"], r["dataset_median_final"]["err"], r["data"]["runs"]),
        ("data set: best final checkpoint", r["dataset_best_final"]["loss"], r["dataset_best_final"]["err"], 1),
    ]
    seen = r["seen_inits_own_final_prompt"]
    sgd, pa = r["sgd_to_match"], r["prompt_alignment"]
    lines = [
        "# G.pt on the tiny CIFAR-10 CNN",
        "",
        f"Test loss/error on a fixed seeded subset of {r['data']['eval_images']} CIFAR-10 test images "
        f"({r['data']['cifar10']['kind']} {Path(r['data']['cifar10']['path']).name}); "
        f"data set of {r['data']['runs']} runs x {r['data']['checkpoints_per_run']} checkpoints; "
        f"prompt = best data set loss {r['prompt_loss']:.4f}. G.pt: {r['model']['params']:,} parameters"
        + (f", trained {tr['steps']} steps in {tr['seconds'] / 60:.0f} min." if (tr := r["model"]["training"]) else "."),
        "",
        "| | median test loss | median test error | networks |",
        "|---|---|---|---|",
        *[f"| {name} | {loss:.4f} | {100 * err:.2f}% | {n} |" for name, loss, err, n in rows],
        "",
        *sweep_table(r),
        f"Fit check on {seen['n']} training runs' own inits, each prompted with its run's final loss ({sampler}): "
        f"median test loss {seen['loss_median']:.4f}, error {100 * seen['err_median']:.2f}%, against "
        f"{seen['target']['loss_median']:.4f} and {100 * seen['target']['err_median']:.2f}% for those final "
        f"checkpoints; squared distance to them {seen['relative_sq_error']:.2f} of the init's.",
        "",
        f"SGD from the same inits ({sgd['optimizer']['name']}, lr {sgd['optimizer']['lr']:.4g}, batch "
        f"{sgd['optimizer']['batch_size']}) reaching the G.pt loss of each init: median "
        f"{sgd['median_steps']} steps ({sgd['reached']}; resolution {sgd['resolution_steps']} steps).",
        "",
        f"Prompt alignment ({pa['samples']} samples, {len(pa['prompts'])} prompts from "
        f"{pa['prompts'][0]:.3f} to {pa['prompts'][-1]:.3f}): R² (achieved vs prompted, identity fit) = "
        f"{pa['r2_identity_all_samples']:.3f} over samples, {pa['r2_identity_per_prompt_median']:.3f} over per-prompt "
        f"medians; Pearson r = {pa['pearson_r_all_samples']:.3f}. Plot: gpt_prompt_alignment.png.",
        "",
        *guidance_table(r),
        f"Evaluation took {r['eval_seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
