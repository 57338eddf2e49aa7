"""Quality per CPU-minute on the 16x16 one-disc shapes: pdlib's shapes recipe against a reference recipe
built on diffusers, side by side in one run.

Both train on the same 20,000 images (``pdlib.data.shapes``, seed 0) at batch 64 with the same threads,
for the same training minutes (measured around the training steps only), and are judged the same way:
valid one-disc samples (``pdlib.data.shapes_validity``) out of ``--n`` DDIM samples (50 steps, eta 0,
x0 clipped to [-1, 1], 95 % Wilson interval). The two trainings alternate, budget by budget, so both
see the same machine load.

* pdlib: ``load_config("shapes-ddpm")``, the book's recipe, EMA weights for sampling.
* reference: ``diffusers.UNet2DModel`` with the same widths (32, 64), one residual block per level,
  8 normalisation groups (the same 652,195 parameters), ``DDPMScheduler`` (linear betas, 1000 steps,
  eps target) and the training loop of diffusers' unconditional-training tutorial: AdamW, linear LR
  warm-up then constant (``get_constant_schedule_with_warmup``), MSE on the noise, gradient norm clipped
  at 1, no EMA; sampled with ``DDIMScheduler`` built from the same config.

    python benchmarks/shapes_vs_diffusers.py --minutes 2 4 8 --n 512 --threads 2

Prints one JSON line per evaluation and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from pdlib.config import load_config
from pdlib.data import shapes, shapes_validity
from pdlib.metrics import wilson_interval
from pdlib.pipeline import build_data, build_method
from pdlib.train import Trainer


class Reference:
    """The diffusers tutorial recipe, trained a step at a time against a clock."""

    def __init__(self, data: torch.Tensor, batch_size: int, lr: float, warmup: int, seed: int = 0):
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
        from diffusers.optimization import get_constant_schedule_with_warmup

        torch.manual_seed(seed)
        self.net = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                               layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                               up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8)
        self.train_sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.sample_sched = DDIMScheduler.from_config(self.train_sched.config)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=lr)
        self.lr_sched = get_constant_schedule_with_warmup(self.opt, warmup)
        self.data, self.batch_size = data, batch_size
        self.g = torch.Generator().manual_seed(seed + 1)
        self.wall_time, self.step = 0.0, 0

    def train_until(self, seconds: float) -> None:
        self.net.train()
        while self.wall_time < seconds:
            start = time.perf_counter()
            x0 = self.data[torch.randint(0, len(self.data), (self.batch_size,), generator=self.g)]
            noise = torch.randn(x0.shape, generator=self.g)
            t = torch.randint(0, 1000, (self.batch_size,), generator=self.g)
            loss = F.mse_loss(self.net(self.train_sched.add_noise(x0, noise, t), t).sample, noise)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            self.lr_sched.step()
            self.step += 1
            self.wall_time += time.perf_counter() - start

    @torch.no_grad()
    def sample(self, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        self.net.eval()
        self.sample_sched.set_timesteps(steps)
        x = torch.randn((n, 3, 16, 16), generator=generator)
        for t in self.sample_sched.timesteps:
            x = self.sample_sched.step(self.net(x, t).sample, t, x, eta=0.0).prev_sample
        return x


def validity(x: torch.Tensor) -> dict:
    k, n = int(shapes_validity(x).sum()), len(x)
    lo, hi = wilson_interval(k, n)
    return {"validity": round(k / n, 4), "ci95": [round(lo, 3), round(hi, 3)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ref-lr", type=float, default=1e-3)
    ap.add_argument("--ref-warmup", type=int, default=200)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config("shapes-ddpm", ["train.steps=1000000", "train.progress=false", "train.checkpoint_every=null"])
    torch.manual_seed(cfg.train.seed)
    pdlib_trainer = Trainer(build_method(cfg), build_data(cfg), cfg.train)
    reference = Reference(shapes(cfg.data.n, size=cfg.data.size, generator=torch.Generator().manual_seed(0)),
                          cfg.train.batch_size, args.ref_lr, args.ref_warmup)
    rows = []
    for minutes in sorted(args.minutes):
        while pdlib_trainer.wall_time < 60 * minutes:
            pdlib_trainer.fit(pdlib_trainer.step + 5)
        x = pdlib_trainer.model.sample(args.n, sampler="ddim", steps=50, clip=True,
                                       generator=torch.Generator().manual_seed(0), progress=False)
        rows.append({"recipe": "pdlib", "minutes": minutes, "steps": pdlib_trainer.step, **validity(x)})
        print(json.dumps(rows[-1]), flush=True)
        reference.train_until(60 * minutes)
        x = reference.sample(args.n, 50, torch.Generator().manual_seed(0))
        rows.append({"recipe": "diffusers reference", "minutes": minutes, "steps": reference.step, **validity(x)})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "torch": torch.__version__, "rows": rows}, f, indent=1)
    print("\n| training minutes | recipe | steps | valid (DDIM 50) | 95 % CI |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['minutes']:g} | {r['recipe']} | {r['steps']} | {r['validity']:.3f} | "
              f"{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f} |")


if __name__ == "__main__":
    main()
