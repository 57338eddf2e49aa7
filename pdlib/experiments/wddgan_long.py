"""Experiment ``wddgan-digits-long``: chapter 7's wavelet DDGAN trained exactly as ``ddgan-digits-long`` trains
its pixel DDGAN, to see whether the wavelet model's failure at the book budget of ``ddgan-digits`` (recall about
0.13 after 1,500 steps) is, like the pixel model's, one of training length.

The run is ``wddgan`` of ``ddgan-digits`` (the chain on the four Haar subbands, 4x4 each, with an L1
reconstruction weight of 1) with the long pixel run's steps, batch size and discriminator learning rate taken
from that run's definition (``ddgan_long.long_runs``), so the two long runs differ only in the space their chain
runs in and in the networks that space needs, as they do in ``ddgan-digits``.
"""

from __future__ import annotations

from pathlib import Path

from . import Experiment, register
from .ddgan_long import long_runs as pixel_long_runs
from .gans import GAN_CODE, ddgan_runs, quality_rows

BASE_ROW = "wddgan"


def long_runs(budget: str) -> dict:
    pixel = pixel_long_runs(budget)["ddgan-long"]
    cfg = ddgan_runs(budget)[BASE_ROW]
    cfg.name = "digits-wddgan-long"
    cfg.train.steps, cfg.train.batch_size = pixel.train.steps, pixel.train.batch_size
    cfg.method.kwargs = {**cfg.method.kwargs, "lr_d": pixel.method.kwargs["lr_d"]}
    return {"wddgan-long": cfg}


def long_evaluate(methods: dict, out: Path, budget: str) -> dict:
    return quality_rows(methods, out, budget, ("wddgan-long",))


register(Experiment("wddgan-digits-long", "Wavelet DDGAN on 8x8 digits trained like ddgan-digits-long (8x the "
                    "steps of ddgan-digits, batch 128, lr_D = lr_G): does the wavelet DDGAN work with more "
                    "training?", long_runs, long_evaluate,
                    code=GAN_CODE + ("experiments.gans", "experiments.ddgan_long", "experiments.lddgan_long")))
