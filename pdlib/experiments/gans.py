"""Experiments of the GAN chapters on scikit-learn's 8x8 digits (train split; judged against the held-out
split in a digits classifier's features, as ``ddpm-digits`` is, so the numbers compare with DDPM's):

- ``ddgan-digits``: DDGAN in pixel space (adversarial loss alone, as the DDGAN paper trains) and wavelet
  DDGAN (Haar subbands, L1 reconstruction weight 1), T = 4;
- ``lddgan-digits``: two autoencoders (f = 2, 4x4x2 latents; without and with the KL penalty), then LDDGAN
  in the latent space of each: adversarial loss alone, + a fixed reconstruction weight, + weighted learning
  (the paper's Table 6), and weighted learning on the KL autoencoder (Table 7).

The networks are the ``cpu-*`` presets, resized to these tiny images; learning rates are higher than the
papers' (their CIFAR-10 settings need hundreds of thousands of steps). No perceptual term in the autoencoders:
LPIPS's backbones pool 8x8 images away before their deeper layers (the paper's autoencoder uses one).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import load_config
from ..config import RunConfig
from . import Experiment, register

#: The modules behind these experiments' numbers, beyond ``experiments.CORE_CODE``.
GAN_CODE = ("methods.gan", "methods.ddgan", "methods.autoencoder", "nets.gan", "nets.autoencoder", "nets.unet",
            "nets.embedding", "wavelets", "adversarial_runs", "data.images", "metrics.digits", "metrics.prdc",
            "metrics.frechet")

GAN_STEPS = {"smoke": 4, "book": 1500, "paper": 50000}
AE_STEPS = {"smoke": 4, "book": 1000, "paper": 20000}
EVAL_SAMPLES = {"smoke": 8, "book": 1000, "paper": 1000}


def _digits_gan(name: str, budget: str, generator: str, discriminator: str, method: str, extra: str,
                steps: dict = GAN_STEPS) -> RunConfig:
    """A run on the 8x8 digits: the shared data, process, optimiser and logging settings."""
    fields = [
        f"name={name}", "data.name=digits", "data.size=8", "data.split=train",
        "model.type=gan", "model.preset=cpu-small", f"model.kwargs={generator}",
        f"method.name={method}", f"method.kwargs={{discriminator: {discriminator}, r1_gamma: 0.02, lazy_reg: 15, "
                                 f"lr_g: 2.0e-4, lr_d: 5.0e-4{extra}}}",
        "diffusion.schedule=ddgan", "diffusion.T=4", "diffusion.parameterization=x0",
        f"train.steps={steps[budget]}", "train.batch_size=64", "train.ema_decay=0.999", "train.grad_clip=null",
        "train.lr=2.0e-4", "train.log_every=50", "train.checkpoint_every=500",
        "sample.steps=null", "sample.n=64", "eval.metrics=[]",
    ]
    if budget == "smoke":
        fields += ["train.checkpoint_every=2", "train.log_every=2", "sample.n=4"]
    return load_config("shapes-ddpm", fields)


PIXEL_G = "{in_channels: 1, image_size: 8}"
PIXEL_D = "{preset: cpu-small, in_channels: 1, image_size: 8}"
WAVELET_G = "{in_channels: 4, image_size: 4, tanh: false}"
WAVELET_D = "{preset: cpu-latent, in_channels: 4, image_size: 4, depth: large}"


def ddgan_runs(budget: str) -> dict:
    return {"ddgan": _digits_gan("digits-ddgan", budget, PIXEL_G, PIXEL_D, "ddgan", ""),
            "wddgan": _digits_gan("digits-wddgan", budget, WAVELET_G, WAVELET_D, "ddgan",
                                  ", space: wavelet, rec_weight: 1.0")}


def quality_rows(methods: dict, out: Path, budget: str, names) -> dict:
    """Digits quality (``pdlib.metrics.digits``) of ``EVAL_SAMPLES`` samples of each named method, with a
    grid of 64 samples per method."""
    from ..metrics.digits import digits_quality, train_digits_classifier
    from ..viz import save_image_grid

    clf, accuracy = train_digits_classifier(epochs=1 if budget == "smoke" else 40)
    rows = {}
    for name in names:
        method = methods[name]
        device = next(method.parameters()).device
        x = method.sample(EVAL_SAMPLES[budget], generator=torch.Generator(device).manual_seed(0)).cpu().clamp(-1, 1)
        rows[name] = digits_quality(x, clf)
        save_image_grid(x[:64], out / f"samples_{name}.png")
    return {"classifier_test_accuracy": round(accuracy, 4), "n_eval_samples": EVAL_SAMPLES[budget], "runs": rows}


def ddgan_evaluate(methods: dict, out: Path, budget: str) -> dict:
    return quality_rows(methods, out, budget, ("ddgan", "wddgan"))


register(Experiment("ddgan-digits", "DDGAN (adversarial loss alone) and wavelet DDGAN (+ L1) on 8x8 digits, "
                    "T = 4; quality against held-out digits in a classifier's features", ddgan_runs,
                    ddgan_evaluate, code=GAN_CODE))


# ------------------------------------------------------------------------------------------- LDDGAN
AE_MODEL = "{in_channels: 1, latent_channels: 2}"
LATENT_G = "{in_channels: 2, image_size: 4, tanh: false}"
LATENT_D = "{preset: cpu-latent, in_channels: 2, image_size: 4, depth: large}"

#: LDDGAN run -> (its autoencoder run, the generator's reconstruction term)
LDDGAN_ROWS = {
    "lddgan-adv": ("autoencoder", ", weighted_learning: false"),
    "lddgan-rec": ("autoencoder", ", weighted_learning: false, rec_weight: 1.0"),
    "lddgan-wl": ("autoencoder", ", weighted_learning: true, delta: 6.0"),
    "lddgan-wl-kl": ("autoencoder-kl", ", weighted_learning: true, delta: 6.0"),
}


def _autoencoder(name: str, budget: str, kl: bool) -> RunConfig:
    fields = [
        f"name={name}", "data.name=digits", "data.size=8", "data.split=train",
        "model.type=autoencoder", "model.preset=cpu-digits", f"model.kwargs={{in_channels: 1, latent_channels: 2, "
                                                              f"kl: {str(kl).lower()}}}",
        "method.name=autoencoder", "method.kwargs={discriminator: {in_channels: 1, channels: 32, num_layers: 1}, "
                                   "adv_weight: 0.1, adv_start: 500, kl_weight: 1.0e-6}",
        f"train.steps={AE_STEPS[budget]}", "train.batch_size=64", "train.lr=1.0e-3", "train.ema_decay=0.999",
        "train.grad_clip=null", "train.log_every=50", "train.checkpoint_every=500", "sample.steps=null",
        "sample.n=64", "eval.metrics=[]",
    ]
    if budget == "smoke":
        fields += ["train.checkpoint_every=2", "train.log_every=2", "sample.n=4", "method.kwargs={discriminator: "
                   "{in_channels: 1, channels: 32, num_layers: 1}, adv_weight: 0.1, adv_start: 2, kl_weight: 1.0e-6}"]
    return load_config("shapes-ddpm", fields)


def lddgan_runs(budget: str) -> dict:
    runs = {"autoencoder": _autoencoder("digits-autoencoder", budget, kl=False),
            "autoencoder-kl": _autoencoder("digits-autoencoder-kl", budget, kl=True)}
    for name, (ae, extra) in LDDGAN_ROWS.items():
        kl = "true" if ae.endswith("kl") else "false"
        cfg = _digits_gan(f"digits-{name}", budget, LATENT_G, LATENT_D, "lddgan",
                          f", autoencoder: {{preset: cpu-digits, in_channels: 1, latent_channels: 2, kl: {kl}, "
                          f"scale_factor: fit}}{extra}")
        cfg.init_from = f"run:{ae}"
        runs[name] = cfg
    return runs


def reconstruction_rows(methods: dict, budget: str) -> dict:
    """Each autoencoder on the held-out digits: mean absolute error and, in the classifier's features, the
    quality of the reconstructions (the analogue of the paper's reconstruction FID)."""
    from ..data.images import digits
    from ..metrics.digits import digits_quality, train_digits_classifier

    clf, _ = train_digits_classifier(epochs=1 if budget == "smoke" else 40)
    test = digits(size=8, split="test")[0]
    rows = {}
    for name in ("autoencoder", "autoencoder-kl"):
        ae = methods[name].autoencoder
        with torch.no_grad():
            rec = ae(test.to(next(ae.parameters()).device)).cpu().clamp(-1, 1)
        rows[name] = {"l1": round(float((rec - test).abs().mean()), 4), **digits_quality(rec, clf)}
    return rows


def lddgan_evaluate(methods: dict, out: Path, budget: str) -> dict:
    from ..viz import save_image_grid

    results = quality_rows(methods, out, budget, tuple(LDDGAN_ROWS))
    results["autoencoders"] = reconstruction_rows(methods, budget)
    for name in ("autoencoder", "autoencoder-kl"):  # the decoder on N(0, I) latents: not a generative model
        g = torch.Generator(next(methods[name].parameters()).device).manual_seed(0)
        save_image_grid(methods[name].sample(64 if budget != "smoke" else 4, generator=g).cpu().clamp(-1, 1),
                        out / f"decoded_noise_{name}.png")
    return results


register(Experiment("lddgan-digits", "Autoencoders (f = 2, without and with KL) and LDDGAN in their latent space on "
                    "8x8 digits: adversarial loss alone, + reconstruction, + weighted learning (Tables 6 and 7)",
                    lddgan_runs, lddgan_evaluate, code=GAN_CODE))
