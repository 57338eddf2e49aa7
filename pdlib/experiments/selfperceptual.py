"""Experiment of the self-perceptual chapter: the paper's one-circle illustration (Lin & Yang 2024,
Figure 2a) made real on 16x16 one-disc images, ``python -m pdlib experiment sp-shapes``.

An MSE model (``shapes-sp-mse``: v target, zero-terminal-SNR linear schedule, plain MSE as in the paper's
eq. 5) is trained for a short and a longer budget. From each, two continuations start with a fresh optimiser: the
self-perceptual objective (a frozen copy of the MSE model as f*, mid-block features, t' uniform) and
plain MSE for the same number of training *minutes* (an SP step costs ``STEP_COST`` MSE steps,
measured on the 2-core machine). The main comparison is repeated with a second seed. From the longer MSE
model, the ablations of the paper's Tables 2-6 each continue for the same number of SP steps: encoder,
decoder, encoder + mid layers; t' = t +- 40 and t' ~ N(t, 100^2); mean absolute distance; the split form
L_sp2; and the SP model as f* (the online model still starts from the MSE model). Every run is judged by
its valid one-disc rate under DDIM with 5, 10, 25 and 50 steps from the last timestep (512 samples, Wilson
interval) and by the Frechet distance of its valid discs' attributes at 25 steps.

A class-conditional variant (label: the disc's colour family, ``pdlib.data.labelled_shapes``, written to
``data/generated/``) trains an MSE model with 10 % label dropout, then SP and more MSE from it; its
samples with and without classifier-free guidance (w = 3, with and without rescale 0.7) from the same
noise and labels measure validity, how often the colour matches the label, and how far each setting moves
the disc from where the MSE model puts it (the paper's observation that SP keeps the layout and guidance
changes it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import RunConfig, load_config
from . import Experiment, register
from .images import validity_by_steps

SP_CODE = ("methods.ddpm", "methods.selfperceptual", "selfperceptual_runs", "nets.unet", "nets.embedding",
           "train.frozen", "guidance", "data.shapes", "data.labelled_shapes", "data.images", "metrics.shapes",
           "metrics.frechet", "metrics.rates", "experiments.images")

#: MSE steps of the two base models, and the SP steps of each continuation
BASE_STEPS = {"smoke": {"short": 4, "long": 6}, "book": {"short": 600, "long": 2000},
              "paper": {"short": 20000, "long": 100000}}
SP_STEPS = {"smoke": {"short": 2, "long": 2}, "book": {"short": 300, "long": 600},
            "paper": {"short": 5000, "long": 20000}}
#: Seconds per SP step (mid block) relative to an MSE step: 1.34, measured by ``benchmarks/sp_cost.py --batch 64
#: --repeats 10 --threads 2`` on the 2-core machine (``benchmarks/results/sp_cost.json``; the multiply-accumulate
#: count predicts 1.33). The MSE continuation gets this many times the SP steps: equal minutes.
STEP_COST = 1.34
SEEDS = (0, 1)
SAMPLER_STEPS = {"smoke": (2, 3), "book": (5, 10, 25, 50), "paper": (5, 10, 25, 50)}
ATTRIBUTE_STEPS = {"smoke": 2, "book": 25, "paper": 25}
EVAL_SAMPLES = {"smoke": 8, "book": 512, "paper": 2000}
#: The continuations' optimiser: the same for SP and MSE (fresh Adam, short warm-up, EMA restarted)
CONTINUE = ["train.lr=0.0002", "train.warmup_steps=50"]

#: ablation row -> (what it changes, SP method.kwargs, init_from); all continue the long MSE model, seed 0
ABLATIONS = {
    "layer-encoder": ("all encoder levels (Table 2)", "{layer: encoder}", "mse-long-s0"),
    "layer-decoder": ("all decoder levels (Table 2)", "{layer: decoder}", "mse-long-s0"),
    "layer-encoder-mid": ("encoder levels + mid block (Table 2)", "{layer: encoder+mid}", "mse-long-s0"),
    "tprime-near": ("t' = t +- 40 (Table 3)", "{t_prime: near}", "mse-long-s0"),
    "tprime-normal": ("t' ~ N(t, 100^2) (Table 3)", "{t_prime: normal}", "mse-long-s0"),
    "mae": ("mean absolute distance (Table 4)", "{distance: mae}", "mse-long-s0"),
    "sp2": ("split formulation L_sp2 (Table 5)", "{formulation: sp2}", "mse-long-s0"),
    "repeat": ("the SP model as f* (Table 6)", "{perceptual_from: 'run:sp-long-s0'}", "mse-long-s0"),
}
#: The conditional variant's data folder (relative to the repository) and size, by budget
COND_DATA = {"smoke": ("data/generated/shapes-colour-16-n256", 256),
             "book": ("data/generated/shapes-colour-16-n20000", 20000),
             "paper": ("data/generated/shapes-colour-16-n20000", 20000)}
#: Settings of the conditional comparison: name -> (run, guidance scale w or None, rescale phi, DDIM steps).
#: Guidance evaluates the network twice per step: 25 guided steps cost the 50 network evaluations of the
#: unguided 50-step rows (the paper's Table 1 lists both).
GUIDANCE = {"mse": ("cond-mse", None, 0.0, 25), "mse-more": ("cond-mse-more", None, 0.0, 25),
            "sp": ("cond-sp", None, 0.0, 25), "mse-50": ("cond-mse", None, 0.0, 50),
            "sp-50": ("cond-sp", None, 0.0, 50),
            "mse-cfg3": ("cond-mse", 3.0, 0.0, 25), "mse-cfg3-rescale": ("cond-mse", 3.0, 0.7, 25),
            "sp-cfg3-rescale": ("cond-sp", 3.0, 0.7, 25)}
#: runs whose weights the chapter loads
KEPT = ("mse-short-s0", "sp-short-s0", "mse-more-short-s0", "mse-long-s0", "sp-long-s0", "mse-more-long-s0",
        "cond-mse", "cond-sp")


def _config(budget: str, name: str, seed: int, steps: int, extra: list[str]) -> RunConfig:
    fields = [f"name=sp-shapes-{name}", f"train.steps={steps}", f"train.seed={seed}", "train.checkpoint_every=500",
              "sample.every=null", "eval.metrics=[]", *extra]
    if budget == "smoke":
        fields += ["data.n=256", "diffusion.T=50", "train.checkpoint_every=2", "train.log_every=2", "sample.n=4",
                   "sample.steps=2", "train.warmup_steps=0"]
    if budget == "paper":
        fields += ["train.device=auto"]
    return load_config("shapes-sp-mse", fields)


def sp_runs(budget: str) -> dict[str, RunConfig]:
    """Base MSE models, their SP and equal-minutes MSE continuations (two seeds), then the ablations."""
    runs = {}
    for seed in SEEDS:
        for size in ("short", "long"):
            base, sp = BASE_STEPS[budget][size], SP_STEPS[budget][size]
            runs[f"mse-{size}-s{seed}"] = _config(budget, f"mse-{size}-s{seed}", seed, base, [])
            runs[f"sp-{size}-s{seed}"] = _config(budget, f"sp-{size}-s{seed}", seed, sp, [
                "method.name=self-perceptual", f"init_from=run:mse-{size}-s{seed}", *CONTINUE])
            runs[f"mse-more-{size}-s{seed}"] = _config(budget, f"mse-more-{size}-s{seed}", seed,
                                                       round(sp * STEP_COST), [f"init_from=run:mse-{size}-s{seed}",
                                                                              *CONTINUE])
    for name, (_, kwargs, init) in ABLATIONS.items():
        runs[name] = _config(budget, name, 0, SP_STEPS[budget]["long"], [
            "method.name=self-perceptual", f"method.kwargs={kwargs}", f"init_from=run:{init}", *CONTINUE])
    root, _ = COND_DATA[budget]
    cond = ["data.name=folder", f"data.root={root}", "model.kwargs={num_classes: 3}", "train.dataset_labels=true"]
    base, sp = BASE_STEPS[budget]["long"], SP_STEPS[budget]["long"]
    runs["cond-mse"] = _config(budget, "cond-mse", 0, base, [*cond, "method.kwargs={cond_drop_prob: 0.1}"])
    runs["cond-sp"] = _config(budget, "cond-sp", 0, sp, [*cond, "method.name=self-perceptual",
                                                         "init_from=run:cond-mse", *CONTINUE])
    runs["cond-mse-more"] = _config(budget, "cond-mse-more", 0, round(sp * STEP_COST), [
        *cond, "method.kwargs={cond_drop_prob: 0.1}", "init_from=run:cond-mse", *CONTINUE])
    return runs


def prepare_data(budget: str) -> None:
    """Write the conditional variant's labelled shapes folder (kept when already there)."""
    from ..data.labelled_shapes import write_shapes_folder
    from . import REPO_DIR

    root, n = COND_DATA[budget]
    write_shapes_folder(REPO_DIR / root, n, size=16, seed=0)


def sp_evaluate(methods: dict, out: Path, budget: str) -> dict:
    """Valid-disc rates by sampler steps and attribute distances for every run, the same-noise sample grids
    of the main comparison, and the training curves' last values."""
    from ..metrics.shapes import disc_attribute_distance
    from ..viz import save_image_grid

    n, k = EVAL_SAMPLES[budget], ATTRIBUTE_STEPS[budget]
    rows = {}
    for name, method in methods.items():
        rows[name] = {"validity": validity_by_steps(method, n, sampler_steps=SAMPLER_STEPS[budget], ddpm_steps=None),
                      "attributes": disc_attribute_distance(_samples(method, n, k))}
    for size in ("short", "long"):
        for kind in ("mse", "sp", "mse-more"):
            save_image_grid(_samples(methods[f"{kind}-{size}-s0"], 32 if budget != "smoke" else 4, k),
                            out / f"samples_{kind}-{size}.png")
    return {"n_eval_samples": n, "sampler": "ddim, integer step counts (first step at t = T-1)",
            "sampler_steps": list(SAMPLER_STEPS[budget]), "attribute_steps": k, "step_cost": STEP_COST,
            "ablations": {name: change for name, (change, _, _) in ABLATIONS.items()}, "runs": rows,
            "conditional": conditional_evaluate(methods, n, budget)}


def conditional_samples(methods: dict, n: int, budget: str) -> tuple[dict, torch.Tensor]:
    """Samples of every ``GUIDANCE`` setting from one noise draw and one set of labels (uniform over the
    three colours): ``({setting: images}, labels)``."""
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(n, 3, 16, 16, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    out = {}
    for name, (run, w, rescale, steps) in GUIDANCE.items():
        method = methods[run]
        device = next(method.parameters()).device
        out[name] = method.sample(n, sampler="ddim", steps=steps if budget != "smoke" else 2, clip=True,
                                  noise=noise.to(device), y=labels.to(device), guidance_scale=w,
                                  guidance_rescale=rescale, progress=False).cpu()
    return out, labels


def centre_shift(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """How far (pixels) the disc's centre moves between paired images (same noise and label), over the pairs
    where both images are valid one-disc images: ``{"mean", "median", "n"}``."""
    from ..data.shapes import shapes_validity
    from ..metrics.shapes import disc_attributes

    both = shapes_validity(images) & shapes_validity(reference)
    if not bool(both.any()):
        return {"mean": None, "median": None, "n": 0}
    d = (disc_attributes(images[both])[:, 1:3] - disc_attributes(reference[both])[:, 1:3]).norm(dim=1)
    return {"mean": round(float(d.mean()), 3), "median": round(float(d.median()), 3), "n": int(both.sum())}


def conditional_evaluate(methods: dict, n: int, budget: str) -> dict:
    """Per ``GUIDANCE`` setting: the valid rate; among the valid samples, the rate whose disc colour (its mean
    over the interior, ``disc_attributes``) falls in the label's colour family; both with Wilson intervals;
    the attribute distance; and how far the disc moves from where the MSE model's 25-step sample puts it."""
    from ..data.shapes import shapes_validity
    from ..metrics import wilson_interval
    from ..metrics.shapes import disc_attribute_distance, disc_attributes

    samples, labels = conditional_samples(methods, n, budget)
    rows = {}
    for name, x in samples.items():
        valid = shapes_validity(x)
        k = int(valid.sum())
        family = disc_attributes(x[valid])[:, 3:6].argmax(1) if k else torch.zeros(0, dtype=torch.long)
        match = int((family == labels[valid]).sum())
        rows[name] = {"valid": k, "rate": round(k / n, 4), "ci95": [round(b, 4) for b in wilson_interval(k, n)],
                      "label_match": match, "label_rate": round(match / k, 4) if k else None,
                      "label_ci95": [round(b, 4) for b in wilson_interval(match, k)] if k else None,
                      "attributes": disc_attribute_distance(x), "centre_shift": centre_shift(x, samples["mse"])}
    settings = {name: dict(zip(("run", "w", "rescale", "steps"), spec)) for name, spec in GUIDANCE.items()}
    return {"n": n, "settings": settings, "rows": rows}


def _samples(method, n: int, steps: int) -> torch.Tensor:
    device = next(method.parameters()).device
    return method.sample(n, sampler="ddim", steps=steps, clip=True, generator=torch.Generator(device).manual_seed(0),
                         progress=False).cpu()


register(Experiment("sp-shapes", "The self-perceptual objective on 16x16 one-disc images: MSE vs SP vs more MSE "
                    "at two budgets and two seeds, and the ablations of Tables 2-6",
                    sp_runs, sp_evaluate, code=SP_CODE, keep_weights=KEPT, prepare=prepare_data))
