"""Experiment ``lddgan-digits-long``: the LDDGAN of chapter 8's speed and quality comparison, trained (at the
book budget) eight times as many steps as the ablation rows of ``lddgan-digits``, to see how much of its
quality gap to the DDPM is training budget.

The run is ``lddgan-rec`` of ``lddgan-digits`` (the ablation's best row: the adversarial loss plus a fixed L1
reconstruction weight of 1 on the latent x0) with three changes, chosen by short probes recorded in issue 8:
the discriminator's learning rate equals the generator's (2e-4 instead of 5e-4: more even class counts),
batch 128 instead of 64 (lower Fréchet distance per CPU-second), and 12,000 steps instead of 1,500. Its
autoencoder is trained here with ``lddgan-digits``' own definition, so the experiment stands alone.
"""

from __future__ import annotations

from pathlib import Path

from . import Experiment, register
from .gans import GAN_CODE, LDDGAN_ROWS, lddgan_runs, quality_rows

BASE_ROW = "lddgan-rec"
LONG_STEPS = {"smoke": 4, "book": 12000, "paper": 50000}
#: What the long run changes in ``lddgan-digits``' ``BASE_ROW`` (besides the number of steps).
CHANGES = {"batch_size": 128, "lr_d": 2.0e-4}


def long_runs(budget: str) -> dict:
    base = lddgan_runs(budget)
    cfg = base[BASE_ROW]
    cfg.name = "digits-lddgan-long"
    cfg.train.steps = LONG_STEPS[budget]
    cfg.train.batch_size = CHANGES["batch_size"]
    cfg.method.kwargs = {**cfg.method.kwargs, "lr_d": CHANGES["lr_d"]}
    autoencoder = LDDGAN_ROWS[BASE_ROW][0]
    return {autoencoder: base[autoencoder], "lddgan-long": cfg}


def long_evaluate(methods: dict, out: Path, budget: str) -> dict:
    return quality_rows(methods, out, budget, ("lddgan-long",))


register(Experiment("lddgan-digits-long", "LDDGAN (+ reconstruction) on 8x8 digits trained 8x longer than the "
                    "lddgan-digits ablation, at batch 128 and lr_D = lr_G: the model of chapter 8's speed table",
                    long_runs, long_evaluate, code=GAN_CODE + ("experiments.gans",)))
