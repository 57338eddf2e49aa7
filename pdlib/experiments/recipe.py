"""The shapes recipe sweep of the images chapter: what makes a 0.65M-parameter DDPM draw valid discs after
a few CPU-minutes. Every run trains the same number of steps on the same data from the same seed and
changes one thing against the book's recipe (``shapes-ddpm.yaml``); the table in the chapter is each
run's valid-sample rate (DDIM 50, 512 samples, 95 % Wilson interval)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_config
from . import Experiment, register
from .images import IMAGE_CODE

SWEEP_STEPS = {"smoke": 4, "book": 1000, "paper": 20000}

#: Every field a row may change, at the recipe's values; each run sets all of them explicitly, so the
#: sweep does not drift when ``shapes-ddpm.yaml`` changes.
RECIPE = {"model.kwargs": "{norm_groups: 8}", "diffusion.parameterization": "v", "diffusion.schedule": "linear",
          "method.kwargs": "{min_snr_gamma: 5}", "train.lr": "0.001", "train.warmup_steps": "200",
          "train.ema_decay": "0.995", "train.ema_warmup": "true"}

#: Seconds per training step relative to the recipe's network, measured on the 2-core machine (batch 64,
#: 16x16, 2 threads, quiet): the wider and deeper networks get proportionally fewer steps (equal minutes).
STEP_COST = {"width48": 1.8, "depth2": 1.4}

#: run name -> (what changes against the recipe, the changed fields)
ROWS = {
    "recipe": ("the book's recipe: 8 groups, v target, min-SNR-5, lr 1e-3, EMA 0.995 with warm-up", {}),
    "old-recipe": ("the first edition's recipe: 32 groups, eps target, plain MSE, EMA without warm-up",
                   {"model.kwargs": "{norm_groups: 32}", "diffusion.parameterization": "eps", "method.kwargs": "{}",
                    "train.ema_warmup": "false"}),
    "groups32": ("32 normalisation groups (one channel each at width 32)", {"model.kwargs": "{norm_groups: 32}"}),
    "eps": ("eps target (min-SNR weight min(SNR, 5) / SNR)", {"diffusion.parameterization": "eps"}),
    "no-min-snr": ("plain MSE on v (no min-SNR weighting)", {"method.kwargs": "{}"}),
    "cosine": ("cosine noise schedule", {"diffusion.schedule": "cosine"}),
    "lr2e-3": ("learning rate 2e-3", {"train.lr": "0.002"}),
    "lr5e-4": ("learning rate 5e-4", {"train.lr": "0.0005"}),
    "no-warmup": ("no learning-rate warm-up", {"train.warmup_steps": "0"}),
    "ema0.999": ("EMA decay 0.999 (with warm-up)", {"train.ema_decay": "0.999"}),
    "ema0.999-no-warmup": ("EMA decay 0.999 without warm-up", {"train.ema_decay": "0.999", "train.ema_warmup": "false"}),
    "width48": ("width 48 (1.46M parameters), equal minutes", {"model.kwargs": "{norm_groups: 8, model_channels: 48}"}),
    "depth2": ("2 residual blocks per level, equal minutes", {"model.kwargs": "{norm_groups: 8, num_res_blocks: 2}"}),
}


def method_steps(name: str, budget: str) -> int:
    """Training steps of sweep row ``name``: the budget's steps, fewer for a costlier network."""
    return max(2, round(SWEEP_STEPS[budget] / STEP_COST.get(name, 1.0)))


def sweep_runs(budget: str) -> dict:
    runs = {}
    for name, (_, changes) in ROWS.items():
        fields = {**RECIPE, **changes, "train.steps": str(method_steps(name, budget)), "train.checkpoint_every": "500"}
        if budget == "smoke":
            fields.update({"data.n": "256", "diffusion.T": "50", "train.checkpoint_every": "2", "train.log_every": "2",
                           "sample.n": "4"})
        if budget == "paper":
            fields.update({"train.device": "auto"})
        runs[name] = load_config("shapes-ddpm", [f"{k}={v}" for k, v in fields.items()] + [f"name=sweep-{name}"])
    return runs


def sweep_evaluate(methods: dict, out: Path, budget: str) -> dict:
    import matplotlib.pyplot as plt

    from .images import validity_by_steps

    n = 8 if budget == "smoke" else 512
    rows = {}
    for name, method in methods.items():
        measured = validity_by_steps(method, n, sampler_steps=(50,), ddpm_steps=None)["ddim50"]
        rows[name] = {"change": ROWS[name][0], "params": sum(p.numel() for p in method.parameters()),
                      "steps": method_steps(name, budget), **measured}
    names = list(rows)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1))
    rates = [rows[k]["rate"] for k in names]
    err = [[rows[k]["rate"] - rows[k]["ci95"][0] for k in names], [rows[k]["ci95"][1] - rows[k]["rate"] for k in names]]
    ax.barh(names, rates, xerr=err, capsize=2, color=["tab:green" if k == "recipe" else "tab:blue" for k in names])
    ax.axvline(rows["recipe"]["rate"], color="tab:green", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"valid one-disc samples, DDIM 50 ({n} samples, 95 % CI)")
    fig.savefig(out / "sweep.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return {"n_eval_samples": n, "rows": rows}


register(Experiment("shapes-sweep", "What the CPU shapes recipe needs: one change at a time against the recipe, "
                    "equal training steps (equal minutes for width and depth)", sweep_runs, sweep_evaluate,
                    code=IMAGE_CODE + ("experiments.images",), keep_weights=False))
