"""Experiments of the images chapter: DDPM on one-disc shapes (16x16) and on digits."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_config
from . import Experiment, register

#: The modules behind these experiments' numbers, beyond ``experiments.CORE_CODE``.
IMAGE_CODE = ("methods.ddpm", "nets.unet", "nets.embedding", "data.shapes")

SHAPES_STEPS = {"smoke": 4, "book": 4000, "paper": 100000}
SHAPES_SAMPLER_STEPS = (5, 10, 20, 50)
SHAPES_DDPM_STEPS = 50


def shapes_runs(budget: str) -> dict:
    overrides = [f"train.steps={SHAPES_STEPS[budget]}"]
    if budget == "smoke":
        overrides += ["data.n=256", "diffusion.T=50", "train.checkpoint_every=2", "train.log_every=2", "sample.n=4"]
    if budget == "paper":
        overrides += ["data.size=32", "model.kwargs={image_size: 32}", "train.batch_size=128", "train.device=auto"]
    return {"ddpm": load_config("shapes-ddpm", overrides)}


def validity_by_steps(method, n: int, sampler_steps=SHAPES_SAMPLER_STEPS, ddpm_steps: int | None = SHAPES_DDPM_STEPS,
                      seed: int = 0) -> dict:
    """Valid one-disc samples out of ``n`` for DDIM (eta = 0) at each number of steps, plus ancestral DDPM
    sampling on ``ddpm_steps`` respaced steps (none if None); the same initial noise for every setting. Returns
    ``{"ddim50": {"valid": k, "n": n, "rate": k / n, "ci95": [lo, hi]}, ...}`` (Wilson interval)."""
    from ..data.shapes import shapes_validity
    from ..metrics import wilson_interval

    device = next(method.parameters()).device
    settings = [("ddim", s) for s in sampler_steps if s <= method.process.T]
    settings += [("ddpm", ddpm_steps)] if ddpm_steps else []
    out = {}
    for sampler, steps in settings:
        g = torch.Generator(device).manual_seed(seed)
        x = method.sample(n, sampler=sampler, steps=min(steps, method.process.T), clip=True, generator=g,
                          progress=False)
        k = int(shapes_validity(x).sum())
        out[f"{sampler}{steps}"] = {"valid": k, "n": n, "rate": round(k / n, 4),
                                    "ci95": [round(b, 4) for b in wilson_interval(k, n)]}
    return out


def shapes_evaluate(methods: dict, out: Path, budget: str) -> dict:
    import matplotlib.pyplot as plt

    from ..viz import save_image_grid

    method = methods["ddpm"]
    n = 8 if budget == "smoke" else 512
    measured = validity_by_steps(method, n)
    validity = {k: v["rate"] for k, v in measured.items()}
    g = torch.Generator(next(method.parameters()).device).manual_seed(1)
    save_image_grid(method.sample(64 if budget != "smoke" else 4, sampler="ddim", steps=50, clip=True,
                                  generator=g, progress=False), out / "samples_ddim50.png")
    fig, ax = plt.subplots(figsize=(4, 3))
    steps = [s for s in SHAPES_SAMPLER_STEPS if f"ddim{s}" in validity]
    keys = [f"ddim{s}" for s in steps]

    def yerr(names):  # distances from each rate down and up to its interval's ends
        return [[validity[k] - measured[k]["ci95"][0] for k in names],
                [measured[k]["ci95"][1] - validity[k] for k in names]]

    ax.errorbar(steps, [validity[k] for k in keys], yerr=yerr(keys), fmt="o-", capsize=3,
                label="DDIM, eta=0 (95 % CI)")
    ddpm = f"ddpm{SHAPES_DDPM_STEPS}"
    ax.errorbar([SHAPES_DDPM_STEPS * 1.08], [validity[ddpm]], yerr=yerr([ddpm]), fmt="s", color="tab:red", capsize=3,
                label=f"DDPM, {SHAPES_DDPM_STEPS} respaced steps (shifted right)")
    ax.set_xscale("log")
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("sampling steps (network calls)")
    ax.set_ylabel("valid one-disc samples")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="center right")
    fig.savefig(out / "validity_vs_steps.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return {"n_eval_samples": n, "validity": validity,
            "validity_ci95": {k: v["ci95"] for k, v in measured.items()}}


register(Experiment("ddpm-shapes", "DDPM (cpu-small UNet) on 16x16 one-disc images; validity vs sampling steps",
                    shapes_runs, shapes_evaluate, code=IMAGE_CODE))


DIGITS_STEPS = {"smoke": 4, "book": 3000, "paper": 50000}
DIGITS_EVAL_SAMPLES = {"smoke": 8, "book": 1000, "paper": 1000}


def digits_runs(budget: str) -> dict:
    overrides = ["data.name=digits", "data.size=8", "data.split=train", "model.kwargs={in_channels: 1, image_size: 8}",
                 f"train.steps={DIGITS_STEPS[budget]}", "train.checkpoint_every=500", "name=digits-ddpm"]
    if budget == "smoke":
        overrides += ["diffusion.T=50", "train.checkpoint_every=2", "train.log_every=2", "sample.n=4"]
    return {"ddpm": load_config("shapes-ddpm", overrides)}


def digits_evaluate(methods: dict, out: Path, budget: str) -> dict:
    """Samples judged against the held-out digits in a trained classifier's features
    (``pdlib.metrics.digits``): precision, recall, Frechet distance with their real-vs-real floors, the
    class histogram; plus a grid of samples."""
    import matplotlib.pyplot as plt

    from ..metrics.digits import digits_quality, train_digits_classifier
    from ..viz import save_image_grid

    method = methods["ddpm"]
    device = next(method.parameters()).device
    clf, accuracy = train_digits_classifier(epochs=1 if budget == "smoke" else 40)
    n = DIGITS_EVAL_SAMPLES[budget]
    x = method.sample(n, sampler="ddim", steps=50, clip=True, generator=torch.Generator(device).manual_seed(0),
                      progress=False).cpu()
    quality = digits_quality(x, clf)
    save_image_grid(x[:64], out / "samples_ddim50.png")
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.bar(range(10), quality["class_counts"])
    ax.axhline(n / 10, color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xticks(range(10))
    ax.set_xlabel("digit (classifier's arg-max)")
    ax.set_ylabel(f"samples (of {n})")
    ax.legend(fontsize=8)
    fig.savefig(out / "class_histogram.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return {"classifier_test_accuracy": round(accuracy, 4), "sampler": "ddim50", **quality}


register(Experiment("ddpm-digits", "DDPM (cpu-small UNet, 1 channel) on scikit-learn's 8x8 digits at their native "
                    "size; quality in a digits classifier's feature space against held-out digits",
                    digits_runs, digits_evaluate, code=IMAGE_CODE + ("data.images", "metrics.digits", "metrics.prdc",
                                                                     "metrics.frechet")))
