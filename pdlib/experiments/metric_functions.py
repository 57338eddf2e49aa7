"""Experiments of the metric-functions chapter: the rows of the Cas-DM paper's Table 1 (An et al. 2024) at
CPU scale, each trained with the same budget and two seeds.

- ``metrics-shapes``: 16x16 one-disc images; judged by the valid-disc rate (``shapes_validity``, Wilson
  interval) and the Frechet distance of the valid discs' attributes to the data's
  (``pdlib.metrics.shapes``);
- ``metrics-digits``: scikit-learn's digits resampled to 16x16 (LPIPS's VGG needs 16 pixels: at 8x8 its
  fifth block would get a 0x0 map); samples resampled back to 8x8 and judged in a digits classifier's
  features as in ``ddpm-digits``, beside the floor of training digits sent through the same 8 -> 16 -> 8
  round trip.

Rows: DDPM (eps), DDPM (x0), DDPM (x0) + LPIPS, dual diffusion, dual + LPIPS, Cas-DM [phi_UNet], Cas-DM
[phi_UNet] + LPIPS, Cas-DM [phi_Fix-Res]. As in the paper: cosine schedule, plain L_simple losses, LPIPS
weight 0.1 (VGG, average pooling), DDIM sampling from the networks' EMA weights; unlike the paper, LPIPS
sees the images at their own 16x16 (a 224 px resize costs about 50x the VGG work, see
``benchmarks/casdm_cost.py``), the networks are the ``cpu-small`` UNet and the ``cpu`` Fix-Res CNN, and
training lasts minutes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_config
from ..config import RunConfig
from . import Experiment, register

#: The modules behind these experiments' numbers, beyond ``experiments.CORE_CODE``.
METRIC_CODE = ("methods.ddpm", "methods.dual", "methods.casdm", "nets.unet", "nets.fixres", "nets.embedding",
               "metric_runs", "perceptual.lpips", "data.shapes", "data.images", "metrics.shapes",
               "metrics.digits", "metrics.prdc", "metrics.frechet", "metrics.rates")

SEEDS = (0, 1)
STEPS = {"smoke": 4, "book": 800, "paper": 100000}
EVAL_SAMPLES = {"smoke": 8, "book": 512, "paper": 1000}
SAMPLER_STEPS = {"smoke": 2, "book": 50, "paper": 100}  #: DDIM steps of the evaluation
LPIPS = "{name: lpips-vgg, avgpool: true}"

#: row -> (method.name, diffusion.parameterization, method.kwargs)
ROWS = {
    "ddpm-eps": ("ddpm", "eps", "{}"),
    "ddpm-x0": ("ddpm", "x0", "{}"),
    "ddpm-x0-lpips": ("ddpm", "x0", f"{{metric: {LPIPS}, metric_weight: 0.1}}"),
    "dual": ("dual", "eps", "{}"),
    "dual-lpips": ("dual", "eps", f"{{metric: {LPIPS}, metric_weight: 0.1}}"),
    "casdm": ("casdm", "eps", "{}"),
    "casdm-lpips": ("casdm", "eps", f"{{metric: {LPIPS}, lambda_metric: 0.1}}"),
    "casdm-fixres": ("casdm", "eps", "{phi: {type: fixres, preset: cpu}}"),
}
#: runs whose weights the chapter loads (the others keep only their numbers, to keep the repository small)
KEPT = ("ddpm-eps-s0", "dual-s0", "casdm-s0", "casdm-lpips-s0")


def _runs(budget: str, data: list[str], prefix: str) -> dict[str, RunConfig]:
    runs = {}
    for row, (method, param, kwargs) in ROWS.items():
        for seed in SEEDS:
            fields = [f"name={prefix}-{row}-s{seed}", *data, f"method.name={method}", f"method.kwargs={kwargs}",
                      "diffusion.schedule=cosine", "diffusion.T=1000", f"diffusion.parameterization={param}",
                      f"train.steps={STEPS[budget]}", f"train.seed={seed}", "train.checkpoint_every=400",
                      f"sample.steps={SAMPLER_STEPS[budget]}", "sample.every=null", "eval.metrics=[]"]
            if budget == "smoke":
                fields += ["diffusion.T=50", "train.checkpoint_every=2", "train.log_every=2",
                           "sample.n=4", "train.warmup_steps=0"]
            runs[f"{row}-s{seed}"] = load_config("shapes-ddpm", fields)
    return runs


def shapes_runs(budget: str) -> dict[str, RunConfig]:
    return _runs(budget, ["data.n=256" if budget == "smoke" else "data.n=20000"], "metrics-shapes")


def digits_runs(budget: str) -> dict[str, RunConfig]:
    return _runs(budget, ["data.name=digits", "data.size=16", "data.split=train",
                          "model.kwargs={in_channels: 1, image_size: 16}"], "metrics-digits")


def _samples(method, n: int, budget: str) -> torch.Tensor:
    device = next(method.parameters()).device
    return method.sample(n, sampler="ddim", steps=SAMPLER_STEPS[budget], clip=True,
                         generator=torch.Generator(device).manual_seed(0), progress=False).cpu()


def mixing_weight_curve(method, x0: torch.Tensor, timesteps) -> list[float]:
    """Mean mixing weight r_t over pixels and images of ``x0`` noised to each timestep (one fixed noise
    draw), for a dual-diffusion or Cas-DM method: how much it trusts its direct x0 estimate at each t."""
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g)
    out = []
    for t in timesteps:
        tt = torch.full((len(x0),), int(t), dtype=torch.long)
        out.append(round(float(method.mixing_weight(method.process.q_sample(x0, tt, eps), tt).mean()), 4))
    return out


def _curves(methods: dict, x0: torch.Tensor) -> dict:
    T = next(iter(methods.values())).process.T
    timesteps = sorted({int(round(f * (T - 1))) for f in (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)})
    return {"timesteps": timesteps,
            "runs": {name: mixing_weight_curve(m, x0, timesteps) for name, m in methods.items()
                     if hasattr(m, "mixing_weight")}}


def _grid(methods: dict, out: Path, budget: str) -> None:
    from ..viz import save_image_grid

    for row in ROWS:
        save_image_grid(_samples(methods[f"{row}-s0"], 64 if budget != "smoke" else 4, budget), out / f"samples_{row}.png")


def shapes_evaluate(methods: dict, out: Path, budget: str) -> dict:
    from ..data.shapes import shapes, shapes_validity
    from ..metrics import wilson_interval
    from ..metrics.shapes import disc_attribute_distance

    n = EVAL_SAMPLES[budget]
    rows = {}
    for name, method in methods.items():
        x = _samples(method, n, budget)
        k = int(shapes_validity(x).sum())
        rows[name] = {"valid": k, "n": n, "rate": round(k / n, 4),
                      "ci95": [round(b, 4) for b in wilson_interval(k, n)], "attributes": disc_attribute_distance(x)}
    _grid(methods, out, budget)
    probe = shapes(64, 16, generator=torch.Generator().manual_seed(1))
    return {"n_eval_samples": n, "sampler": f"ddim{SAMPLER_STEPS[budget]}", "runs": rows, "mixing_weight": _curves(methods, probe)}


def round_trip(x: torch.Tensor) -> torch.Tensor:
    """16x16 digits back to the classifier's 8x8 (bilinear, antialiased)."""
    return torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False,
                                           antialias=True).clamp(-1, 1)


def digits_evaluate(methods: dict, out: Path, budget: str) -> dict:
    from ..data.images import digits
    from ..metrics.digits import digits_quality, train_digits_classifier

    clf, accuracy = train_digits_classifier(epochs=1 if budget == "smoke" else 40)
    n = EVAL_SAMPLES[budget]
    rows = {name: digits_quality(round_trip(_samples(method, n, budget)), clf) for name, method in methods.items()}
    train16, _ = digits(size=16, split="train")
    pick = torch.randperm(len(train16), generator=torch.Generator().manual_seed(1))[:n]
    floor = digits_quality(round_trip(train16[pick]), clf)["samples"]
    _grid(methods, out, budget)
    return {"classifier_test_accuracy": round(accuracy, 4), "n_eval_samples": n, "sampler": f"ddim{SAMPLER_STEPS[budget]}",
            "round_trip_floor": floor, "runs": rows, "mixing_weight": _curves(methods, train16[:64])}


register(Experiment("metrics-shapes", "Table 1 of Cas-DM at CPU scale on 16x16 one-disc images: DDPM eps/x0, "
                    "x0 + LPIPS, dual (+ LPIPS), Cas-DM phi_UNet (+ LPIPS), phi_Fix-Res; two seeds each",
                    shapes_runs, shapes_evaluate, code=METRIC_CODE, keep_weights=KEPT))
register(Experiment("metrics-digits", "Table 1 of Cas-DM at CPU scale on digits resampled to 16x16: the same "
                    "eight rows, two seeds each; quality in a digits classifier's features",
                    digits_runs, digits_evaluate, code=METRIC_CODE, keep_weights=KEPT))
