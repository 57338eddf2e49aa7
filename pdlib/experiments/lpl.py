"""Experiment of the latent-perceptual-loss chapter: the LPL paper's comparisons (Berrada Ifriqi et al. 2025,
"Boosting latent diffusion with perceptual objectives", sections 3-4) on 16x16 one-disc images,
``python -m pdlib experiment lpl-shapes``.

1. ``autoencoder``: the ``cpu-f2`` ``AutoEncoder`` (f = 2: 16x16x3 images to 8x8x4 latents) trained with L1
   alone. No KL penalty: the latents are scaled to unit variance anyway (``scale_factor: fit``), the
   unregularised latent space is the sharper one (LDDGAN's ablation, ``pdlib.nets.autoencoder``) and
   latent diffusion's KL weight (1e-6) barely regularises. No LPIPS: VGG pools 16x16 images away. No
   discriminator: it is built but never switched on (``adv_start`` = the run's last step + 1), because L1
   alone already reconstructs every disc validly (a probe of these settings: 512 of 512 reconstructions of
   fresh shapes valid from step 310 on, L1 error 0.028 at step 430), while the adversarial phase would make
   each step about 35 % costlier and add a GAN's instability to the ceiling of every latent model. The
   reconstructions are somewhat soft at the disc's edge, which the evaluation's spectrum of them shows.
2. Main grid, two seeds each, every run chained on the autoencoder (``init_from: run:autoencoder``):
   latent DDPM with the eps target, latent DDPM with the v target, and flow matching on the OT path
   (``pdlib.methods.latent``), each without and with LPL, for the same number of steps. As in the paper:
   the quadratic schedule of SDXL (T = 1000), plain L_simple losses (no min-SNR weighting), DDIM with 50
   steps for diffusion and 50 Euler steps for the flow, t ~ U(0, 1) for the flow (the paper's
   heavy-tailed mode sampling aside). LPL as the paper's main runs: w_LPL = 3 (its Figure 9), all decoder
   maps with depth weights, the predicted map's statistics for both maps, outliers masked, and the gate
   ``SNR >= 3.07`` (``pdlib.perceptual.lpl.DEFAULT_SNR_THRESHOLD``, the authors' code's ``t < 200``): on
   the quadratic schedule it admits 200 of the 1000 timesteps, 20 % of the uniformly drawn ones; on the
   flow's path it admits ``t <= 0.363``, 36 % of them. LPL is applied from the first step (the paper adds it
   in a post-training phase). An LPL step is costlier than a plain one (two decoder passes over the
   gated-in samples, one of them with gradient): the runs get equal *steps*, not equal minutes, and the
   evaluation measures the step time of each kind with and without LPL so the chapter can report the
   overhead (the record's ``train_wall_time_s`` divided by the steps is the same figure from training).
3. Ablations, one seed, each eps + LPL with one change from ``eps-lpl-s0`` (section 4.3): the depth (only
   the decoder's last map; only its first, the middle block's 8x8 output), the normalisation (each map its
   own statistics, the paper's "separate"; the target map's for both, the diffusers example's "shared"), the
   gate (``SNR >= 8.5``: ``t < 100``, LPL on fewer, less noisy timesteps; ``SNR >= 0.111``: ``t < 674``, LPL
   on more timesteps, the paper's noise threshold tau = 3 on its sigma/alpha scale, Figure 6), and the
   weight (1, the authors' public code; 10).
4. Post-training (the paper's section 4.1 and Tables 2 and 4: LPL added after pre-training without it): each
   seed's ``eps-s{seed}`` goes on for ``STEPS["post"]`` more steps with LPL (``eps-post-lpl-s{seed}``) and,
   as its control, without (``eps-post-s{seed}``), both through ``method.kwargs.denoiser_from`` and with the
   training seed ``seed + POST_SEED_OFFSET`` (fresh batches and noise, not a replay). The paper's
   post-training numbers are for DDPM-eps, the kind that LPL from the first step harms here.

Evaluation, per run: the valid-disc rate of 512 samples with its Wilson interval (every run starts from the
same latent noise), the Frechet distance of the valid discs' attributes, and the radially averaged power
spectrum of the samples (``pdlib.metrics.spectrum``, 12 bins for 16x16 images: 0 to 11 cycles per image)
with its log10 ratio to the spectrum of real shapes images (the paper's Figures 4-5); the autoencoder's
reconstruction validity on 2,048 fresh shapes (the ceiling of every latent model), its error and its spectrum;
``spectrum_ratio.png`` (the seed-0 main runs' log10 ratios), ``reconstructions.png`` and sample grids of the
seed-0 main runs; the measured step times. Probe timings and the book budget are next to ``STEPS``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch

from ..config import RunConfig, load_config
from . import Experiment, register

LPL_CODE = ("methods.ddpm", "methods.latent", "methods.autoencoder", "latent_runs", "adversarial_runs",
            "perceptual.lpl", "nets.autoencoder", "nets.unet", "nets.embedding", "train.frozen", "data.shapes",
            "metrics.shapes", "metrics.frechet", "metrics.spectrum", "metrics.rates")

#: Training steps of the autoencoder and of every latent run (main grid and ablations alike).
#: Probe step times (batch 64, one thread of a 2-core machine that was busy with another job): autoencoder
#: 270 ms (360 ms with the discriminator on); latent eps 98 ms, + LPL 177 ms; latent v 104 / 189 ms; flow
#: 103 / 244 ms (its gate admits 36 % of the timesteps, not 20 %); eps + LPL gated at SNR >= 0.111 348 ms, at
#: SNR >= 8.5 143 ms. Building a latent run fits the scale factor on all 20,000 training images (15 s). The
#: book machine (2 threads, idle) ran the pixel-space cpu-small UNet at 136 ms/step where the probe machine
#: ran it at 260 ms, so book times are about 0.52-0.65 of probe times. Book budget in probe minutes: 800
#: autoencoder steps 3.6; 20 latent runs of 1200 steps 70 (3.5 s per step of all twenty: 1.9 s the main
#: grid, 1.6 s the ablations); building the runs 6; evaluation 4-5 (DDIM/Euler 50 on 512 samples: 9 s per
#: run): about 84 probe minutes, 45-55 minutes on the book machine.
#: ``post``: the post-training runs' further steps (half the pre-training's; the paper's 200k after 600k is a
#: third); their training seed is the source's plus ``POST_SEED_OFFSET``, so they draw fresh batches and noise
#: rather than replay the source's first steps.
STEPS = {"smoke": {"autoencoder": 3, "latent": 2, "post": 2}, "book": {"autoencoder": 800, "latent": 1200, "post": 600},
         "paper": {"autoencoder": 20000, "latent": 100000, "post": 50000}}
SEEDS = (0, 1)
POST_SEED_OFFSET = 100
EVAL_SAMPLES = {"smoke": 8, "book": 512, "paper": 2000}
SAMPLER_STEPS = {"smoke": 2, "book": 50, "paper": 50}  #: DDIM steps (diffusion) and Euler steps (flow)
#: real images behind the reference spectrum; the autoencoder's reconstruction validity and spectrum use them too
SPECTRUM_IMAGES = {"smoke": 64, "book": 2048, "paper": 4096}
TIMED_STEPS = {"smoke": 1, "book": 20, "paper": 20}  #: training steps timed per kind in the evaluation

AE_SPEC = "{preset: cpu-f2, scale_factor: fit}"
LPL_WEIGHT = 3.0
LPL_DEFAULTS = {"layers": None, "normalize": "predicted", "depth_weights": True, "snr_threshold": 3.07,
                "outlier_mask": True}
#: main kind -> (method.name, diffusion.parameterization)
KINDS = {"eps": ("latent", "eps"), "v": ("latent", "v"), "flow": ("flow", "eps")}
#: ablation -> (what it changes from eps-lpl-s0, LPL options that differ, LPL weight)
ABLATIONS = {
    "layers-last": ("only the decoder's last map (16x16, 32 channels; Figure 7)", {"layers": [2]}, LPL_WEIGHT),
    "layers-first": ("only the decoder's first map (the middle block, 8x8; Figure 7)", {"layers": [0]}, LPL_WEIGHT),
    "norm-separate": ("each map standardised with its own statistics (section 4.3)", {"normalize": "separate"},
                      LPL_WEIGHT),
    "norm-target": ("both maps standardised with the target map's statistics", {"normalize": "target"}, LPL_WEIGHT),
    "snr-high": ("gate SNR >= 8.5: t < 100, LPL on 10 % of the timesteps (Figure 6)", {"snr_threshold": 8.5},
                 LPL_WEIGHT),
    "snr-low": ("gate SNR >= 0.111: t < 674, LPL on 67 % of the timesteps, tau = 3 (Figure 6)",
                {"snr_threshold": 0.111}, LPL_WEIGHT),
    "weight-1": ("w_LPL = 1 (Figure 9; the authors' public code)", {}, 1.0),
    "weight-10": ("w_LPL = 10 (Figure 9)", {}, 10.0),
}
#: runs whose weights the chapter loads
KEPT = ("autoencoder", *(f"{kind}{lpl}-s0" for kind in (*KINDS, "eps-post") for lpl in ("", "-lpl")))


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _config(budget: str, name: str, steps: int, seed: int, extra: list[str]) -> RunConfig:
    fields = [f"name=lpl-shapes-{name}", f"train.steps={steps}", f"train.seed={seed}", "train.checkpoint_every=500",
              "sample.every=null", f"sample.steps={SAMPLER_STEPS[budget]}", "eval.metrics=[]", *extra]
    if budget == "smoke":
        fields += ["data.n=256", "train.checkpoint_every=2", "train.log_every=2", "sample.n=4",
                   "train.warmup_steps=0"]
    if budget == "paper":
        fields += ["train.device=auto"]
    return load_config("shapes-ddpm", fields)


def _autoencoder(budget: str) -> RunConfig:
    steps = STEPS[budget]["autoencoder"]
    return _config(budget, "autoencoder", steps, 0, [
        "model.type=autoencoder", "model.preset=cpu-f2", "method.name=autoencoder",
        # the discriminator never switches on: adv_start is the last step + 1 (module docstring)
        (f"method.kwargs={{discriminator: {{in_channels: 3, channels: 32, num_layers: 2}}, adv_weight: 0.1, "
         f"adv_start: {steps}}}"),
        "train.lr=1.0e-3", "train.warmup_steps=0", "train.ema_decay=0.999", "train.grad_clip=null",
        "sample.steps=null"])


def _latent(budget: str, name: str, kind: str, seed: int, lpl: dict | None, weight: float = LPL_WEIGHT,
            denoiser: str | None = None) -> RunConfig:
    """A latent run on the experiment's autoencoder; ``denoiser`` (an earlier run) makes it a post-training run."""
    method, param = KINDS[kind]
    kwargs = f"autoencoder: {AE_SPEC}, lpl: {_yaml(lpl)}" + (f", lpl_weight: {weight}" if lpl is not None else "")
    if method == "flow":
        kwargs += ", time_scale: 1000.0"
    if denoiser is not None:
        kwargs += f", denoiser_from: run:{denoiser}"
    steps = STEPS[budget]["latent" if denoiser is None else "post"]
    return _config(budget, name, steps, seed, [
        f"method.name={method}", f"method.kwargs={{{kwargs}}}", "init_from=run:autoencoder",
        "diffusion.schedule=quadratic", "diffusion.T=1000", f"diffusion.parameterization={param}"])


def lpl_runs(budget: str) -> dict[str, RunConfig]:
    """The autoencoder, the main grid (three kinds without and with LPL, two seeds), the ablations, then the
    post-training pairs."""
    runs = {"autoencoder": _autoencoder(budget)}
    for seed in SEEDS:
        for kind in KINDS:
            runs[f"{kind}-s{seed}"] = _latent(budget, f"{kind}-s{seed}", kind, seed, None)
            runs[f"{kind}-lpl-s{seed}"] = _latent(budget, f"{kind}-lpl-s{seed}", kind, seed, LPL_DEFAULTS)
    for name, (_, change, weight) in ABLATIONS.items():
        runs[name] = _latent(budget, name, "eps", 0, {**LPL_DEFAULTS, **change}, weight)
    for seed in SEEDS:
        for lpl, spec in (("", None), ("-lpl", LPL_DEFAULTS)):
            name = f"eps-post{lpl}-s{seed}"
            runs[name] = _latent(budget, name, "eps", seed + POST_SEED_OFFSET, spec, denoiser=f"eps-s{seed}")
    return runs


# ------------------------------------------------------------------------------------------- evaluation
def _round(values) -> list[float]:
    return [float(f"{float(v):.4g}") for v in values]


def _rate(valid: torch.Tensor) -> dict:
    from ..metrics import wilson_interval

    k, n = int(valid.sum()), len(valid)
    return {"valid": k, "n": n, "rate": round(k / n, 4), "ci95": [round(b, 4) for b in wilson_interval(k, n)]}


def _spectrum(images: torch.Tensor, reference: torch.Tensor | None = None) -> tuple[dict, torch.Tensor]:
    """The radially averaged power spectrum of ``images`` as a JSON row (rounded; with the log10 ratio to the
    ``reference`` power when given), and the power itself."""
    from ..metrics.spectrum import power_spectrum

    _, power = power_spectrum(images)
    out = {"power": _round(power)}
    if reference is not None:
        out["log10_ratio"] = [round(float(v), 4) for v in torch.log10(power / reference)]
    return out, power


def gate_fraction(method) -> float | None:
    """The fraction of uniformly drawn training times at which the method's LPL counts (None without LPL)."""
    if method.lpl is None:
        return None
    threshold = method.lpl.net.snr_threshold
    if threshold is None:
        return 1.0
    if hasattr(method, "process"):  # DDPM: t ~ U{0..T-1}
        return round(float((method.process.snr(torch.arange(method.process.T)) >= threshold).float().mean()), 4)
    return round(1.0 / (1.0 + math.sqrt(threshold)), 4)  # flow: SNR ((1 - t) / t)^2 >= s  <=>  t <= 1 / (1 + sqrt s)


def _lpl_settings(method) -> dict | None:
    if method.lpl is None:
        return None
    loss = method.lpl.net
    return {"weight": method.lpl_weight, "layers": list(loss.layers) if loss.layers is not None else None,
            "normalize": loss.normalize, "snr_threshold": loss.snr_threshold, "gate_fraction": gate_fraction(method)}


def _samples(method, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Decoded samples from the given latent noise: DDIM (eta 0) for diffusion, Euler for the flow."""
    device = next(method.parameters()).device
    sampler = "ddim" if hasattr(method, "process") else "euler"
    return method.sample(len(noise), steps=steps, sampler=sampler, noise=noise.to(device), clip=True,
                         progress=False).cpu()


def step_time_ms(method, data: torch.Tensor, steps: int, batch_size: int = 64, warmup: int = 2) -> float:
    """Milliseconds of one training step (loss, backward, Adam update) of a copy of ``method``'s network, on
    batches of ``data``, with the random draws fixed; the median over ``steps`` timed steps."""
    m = copy.deepcopy(method).train()
    m.requires_grad_(True)  # the frozen autoencoder and LPL stay frozen (``pdlib.train.Frozen``)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        x = data[torch.randint(0, len(data), (batch_size,), generator=g)]
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        m.loss(x, generator=g)["loss"].backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return round(1000 * sorted(times)[len(times) // 2], 1)


def _step_times(methods: dict, budget: str) -> dict:
    from ..data.shapes import shapes

    data = shapes(1024, 16, generator=torch.Generator().manual_seed(3))
    out = {}
    for kind in KINDS:
        plain = step_time_ms(methods[f"{kind}-s0"], data, TIMED_STEPS[budget])
        lpl = step_time_ms(methods[f"{kind}-lpl-s0"], data, TIMED_STEPS[budget])
        out[kind] = {"plain": plain, "lpl": lpl, "ratio": round(lpl / plain, 3)}
    return {"ms_per_step": out, "batch_size": 64, "timed_steps": TIMED_STEPS[budget], "statistic": "median",
            "threads": torch.get_num_threads()}


def _autoencoder_rows(autoencoder, real: torch.Tensor, reference: torch.Tensor) -> tuple[dict, torch.Tensor]:
    from ..data.shapes import shapes_validity

    device = next(autoencoder.parameters()).device
    with torch.no_grad():
        rec = autoencoder(real.to(device)).cpu().clamp(-1, 1)
    spectrum, _ = _spectrum(rec, reference)
    return {"reconstruction": _rate(shapes_validity(rec)), "data": _rate(shapes_validity(real)),
            "l1": round(float((rec - real).abs().mean()), 4), "mse": round(float((rec - real).square().mean()), 5),
            "spectrum": spectrum}, rec


def _spectrum_figure(rows: dict, autoencoder: dict, cycles: list, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.axhline(0.0, color="k", lw=0.8)
    ax.plot(cycles, autoencoder["spectrum"]["log10_ratio"], "k--", label="autoencoder reconstructions")
    colours = {"eps": "tab:blue", "v": "tab:orange", "flow": "tab:green"}
    for kind, colour in colours.items():
        ax.plot(cycles, rows[f"{kind}-s0"]["spectrum"]["log10_ratio"], color=colour, ls=":", marker="o", ms=3,
                label=f"{kind}")
        ax.plot(cycles, rows[f"{kind}-lpl-s0"]["spectrum"]["log10_ratio"], color=colour, marker="s", ms=3,
                label=f"{kind} + LPL")
    ax.axvline(8, color="0.6", lw=0.8, ls="--")  # Nyquist: beyond it only the corners of the 2-D spectrum
    ax.set_xlabel("spatial frequency (cycles per image)")
    ax.set_ylabel("log10 power / real images' power")
    ax.legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def lpl_evaluate(methods: dict, out: Path, budget: str) -> dict:
    """Validity, attribute distance and power spectrum of every latent run's samples (one shared noise draw),
    the autoencoder's reconstructions, sample grids of the seed-0 main runs, and the measured step times."""
    from ..data.shapes import shapes, shapes_validity
    from ..metrics.shapes import disc_attribute_distance
    from ..metrics.spectrum import power_spectrum
    from ..viz import save_image_grid

    n, steps = EVAL_SAMPLES[budget], SAMPLER_STEPS[budget]
    real = shapes(SPECTRUM_IMAGES[budget], 16, generator=torch.Generator().manual_seed(1))
    frequencies, reference = power_spectrum(real)
    autoencoder, rec = _autoencoder_rows(methods["autoencoder"].autoencoder, real, reference)
    grid = 64 if budget != "smoke" else 4
    half, per = grid // 2, min(8, grid // 2)  # rows of originals, each above the row of their reconstructions
    pairs = torch.stack([real[:half].unflatten(0, (-1, per)), rec[:half].unflatten(0, (-1, per))], 1)
    save_image_grid(pairs.flatten(0, 2), out / "reconstructions.png", nrow=per)

    ae = methods["eps-s0"].autoencoder.net  # every latent run's (fitted to the same data: one scale factor)
    autoencoder["scale_factor"] = round(float(ae.scale_factor), 5)
    side = real.shape[-1] // ae.factor
    noise = torch.randn(n, ae.latent_channels, side, side, generator=torch.Generator().manual_seed(0))
    rows = {}
    for name, method in methods.items():
        if name == "autoencoder":
            continue
        x = _samples(method, noise, steps)
        spectrum, _ = _spectrum(x, reference)
        kind = name.split("-")[0] if name.split("-")[0] in KINDS else "eps"  # the ablations are eps + LPL
        rows[name] = {"kind": kind, "lpl": _lpl_settings(method), "validity": _rate(shapes_validity(x)),
                      "attributes": disc_attribute_distance(x), "spectrum": spectrum}
        if name in KEPT:
            save_image_grid(x[:grid], out / f"samples_{name.removesuffix('-s0')}.png")
    cycles = [round(float(f) * 16) for f in frequencies]
    _spectrum_figure(rows, autoencoder, cycles, out / "spectrum_ratio.png")
    comparison = {}
    for kind in (*KINDS, "eps-post"):
        plain = [rows[f"{kind}-s{s}"]["validity"]["rate"] for s in SEEDS]
        lpl = [rows[f"{kind}-lpl-s{s}"]["validity"]["rate"] for s in SEEDS]
        comparison[kind] = {"plain": plain, "lpl": lpl,
                            "mean_difference": round(sum(lpl) / len(lpl) - sum(plain) / len(plain), 4)}
    return {"n_eval_samples": n, "sampler": f"ddim{steps} (diffusion), euler{steps} (flow); one latent noise draw "
                                            f"(seed 0) shared by every run",
            "steps": dict(STEPS[budget]),
            "spectrum": {"cycles_per_image": cycles, "frequencies": _round(frequencies),
                         "n_real_images": len(real), "real": _round(reference)},
            "autoencoder": autoencoder, "runs": rows, "comparison": comparison,
            "ablations": {name: change for name, (change, _, _) in ABLATIONS.items()},
            "step_time": _step_times(methods, budget)}


register(Experiment("lpl-shapes", "The latent perceptual loss on 16x16 one-disc images: an f = 2 autoencoder, latent "
                    "DDPM (eps, v) and flow matching without and with LPL (two seeds), and the ablations of "
                    "depth, normalisation, SNR gate and weight",
                    lpl_runs, lpl_evaluate, code=LPL_CODE, keep_weights=KEPT))
