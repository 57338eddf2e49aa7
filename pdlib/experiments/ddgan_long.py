"""Experiment ``ddgan-digits-long``: chapter 7's pixel-space DDGAN trained the way chapter 8 trains its latent
model ``lddgan-digits-long``, to see whether the pixel DDGAN's failure at the book budget of ``ddgan-digits``
is one of training length, and what the latent space saves.

The run is ``ddgan`` of ``ddgan-digits`` (the adversarial loss alone, T = 4, on the 8x8 digits) with exactly
the changes ``lddgan-digits-long`` makes to its ablation row (``lddgan_long.CHANGES``: batch 128, lr_D =
lr_G = 2e-4) and its number of steps (``lddgan_long.LONG_STEPS``: 12,000, eight times the ablation's). Short
probes recorded in issue 8 showed the Fréchet distance of this run falling from 366 to 72 between 1,000
and 3,000 steps. The two long runs then differ only in the space the chain runs in and in the networks
that space needs.
"""

from __future__ import annotations

from pathlib import Path

from . import Experiment, register
from .gans import GAN_CODE, ddgan_runs, quality_rows
from .lddgan_long import CHANGES, LONG_STEPS

BASE_ROW = "ddgan"


def long_runs(budget: str) -> dict:
    cfg = ddgan_runs(budget)[BASE_ROW]
    cfg.name = "digits-ddgan-long"
    cfg.train.steps = LONG_STEPS[budget]
    cfg.train.batch_size = CHANGES["batch_size"]
    cfg.method.kwargs = {**cfg.method.kwargs, "lr_d": CHANGES["lr_d"]}
    return {"ddgan-long": cfg}


def long_evaluate(methods: dict, out: Path, budget: str) -> dict:
    return quality_rows(methods, out, budget, ("ddgan-long",))


register(Experiment("ddgan-digits-long", "DDGAN in pixel space on 8x8 digits trained like lddgan-digits-long "
                    "(8x the steps of ddgan-digits, batch 128, lr_D = lr_G): does the pixel DDGAN work with "
                    "more training?", long_runs, long_evaluate,
                    code=GAN_CODE + ("experiments.gans", "experiments.lddgan_long")))
