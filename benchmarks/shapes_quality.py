"""Quality per CPU-minute on the 16x16 one-disc shapes: valid-sample rate (DDIM 50 steps, a 95 % Wilson
interval) against training minutes, for pdlib's shapes recipe with any config overrides.

    python benchmarks/shapes_quality.py --steps 4000 --every 1000 --n 512 "model.kwargs={norm_groups: 32}"

Prints one JSON line per evaluation: step, training minutes, validity and its interval.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pdlib.config import load_config
from pdlib.data import shapes_validity
from pdlib.metrics import wilson_interval
from pdlib.pipeline import build_data, build_method
from pdlib.train import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config("shapes-ddpm", [f"train.steps={args.steps}", "train.progress=false",
                                      "train.checkpoint_every=null", *args.overrides])
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(build_method(cfg), build_data(cfg), cfg.train)
    for step in range(args.every, args.steps + 1, args.every):
        start = time.perf_counter()
        trainer.fit(step)
        g = torch.Generator().manual_seed(0)
        x = trainer.model.sample(args.n, sampler="ddim", steps=50, clip=True, generator=g, progress=False)
        k = int(shapes_validity(x).sum())
        lo, hi = wilson_interval(k, args.n)
        print(json.dumps({"step": step, "train_min": round(trainer.wall_time / 60, 2), "validity": k / args.n,
                          "ci95": [round(lo, 3), round(hi, 3)], "eval_s": round(time.perf_counter() - start, 1),
                          "overrides": args.overrides}), flush=True)


if __name__ == "__main__":
    main()
