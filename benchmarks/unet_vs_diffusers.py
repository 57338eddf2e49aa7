"""Speed of pdlib's ``UNet.from_preset("ddpm-cifar10")`` against diffusers' ``UNet2DModel`` built the same way.

Both networks are the DDPM CIFAR-10 UNet of Ho et al. (2020): 128 channels, multipliers (1, 2, 2, 2),
2 residual blocks per level, single-head attention at 16x16 and in the middle, GroupNorm(32),
dropout 0.1 (35.7M parameters each). The script times, on the same batch, thread count, dtype and
memory format,

* forward: one inference pass (``eval()`` and ``torch.no_grad()``), the cost of one sampling step;
* train step: forward + MSE loss + backward + ``AdamW.step()`` in ``train()`` mode;

alternating the two networks on every repeat (the order is swapped each time), and prints the
medians and the ratios pdlib / diffusers (below 1 means pdlib is faster).

    python benchmarks/unet_vs_diffusers.py --batch 8 --repeats 5
    python benchmarks/unet_vs_diffusers.py --device cuda --batch 128 --bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from timing import cpu_name, timed  # benchmarks/timing.py (this folder is on sys.path)

from pdlib.nets.unet import UNet


def diffusers_ddpm_cifar10():
    """diffusers' UNet2DModel in the configuration of google/ddpm-cifar10-32 (Ho et al. 2020)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        layers_per_block=2, norm_num_groups=32, norm_eps=1e-6, dropout=0.1, attention_head_dim=None,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
    )


class _Sample(torch.nn.Module):
    """Make diffusers' model return a tensor, as pdlib's does."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x, t).sample


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per network and task")
    ap.add_argument("--warmup", type=int, default=2, help="untimed passes per network and task")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    ap.add_argument("--bf16", action="store_true", help="run under torch.autocast(dtype=torch.bfloat16)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last weights and inputs")
    ap.add_argument("--compile", action="store_true", help="torch.compile both networks")
    ap.add_argument("--only", choices=["forward", "train"], default=None, help="time one task only")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    nets = {"pdlib": UNet.from_preset("ddpm-cifar10"), "diffusers": _Sample(diffusers_ddpm_cifar10())}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()}
    nets = {k: m.to(device, memory_format=fmt) for k, m in nets.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in nets.items()}
    runs = {k: (torch.compile(m) if args.compile else m) for k, m in nets.items()}

    x = torch.randn(args.batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (args.batch,), device=device)
    target = torch.randn_like(x)

    def amp():
        return torch.autocast(device.type, dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()

    def forward(name):
        nets[name].eval()
        with torch.no_grad(), amp():
            runs[name](x, t)

    def train_step(name):
        nets[name].train()
        opts[name].zero_grad(set_to_none=True)
        with amp():
            loss = F.mse_loss(runs[name](x, t).float(), target)
        loss.backward()
        opts[name].step()

    tasks = {"forward": forward, "train_step": train_step}
    if args.only == "forward":
        tasks.pop("train_step")
    elif args.only == "train":
        tasks.pop("forward")
    times = {task: {name: [] for name in nets} for task in tasks}
    for task, fn in tasks.items():
        for name in nets:
            for _ in range(args.warmup):
                fn(name)
    for r in range(args.repeats):
        order = list(nets) if r % 2 == 0 else list(reversed(nets))
        for task, fn in tasks.items():
            for name in order:
                times[task][name].append(timed(lambda: fn(name), device))

    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
        "batch": args.batch, "repeats": args.repeats, "bf16": args.bf16, "channels_last": args.channels_last,
        "compile": args.compile, "parameters": params,
        "median_s": {task: {n: statistics.median(v) for n, v in d.items()} for task, d in times.items()},
    }
    result["ratio_pdlib_over_diffusers"] = {
        task: m["pdlib"] / m["diffusers"] for task, m in result["median_s"].items()
    }
    print(f"parameters: pdlib {params['pdlib']:,}  diffusers {params['diffusers']:,}")
    print(f"device {device}, threads {result['threads']} of {result['cpu_count']} cores "
          f"(1-min load average {result['load_average_1min']:.1f}), batch {args.batch}, bf16 {args.bf16}, "
          f"channels_last {args.channels_last}, compile {args.compile}, {args.repeats} repeats (medians)")
    for task, m in result["median_s"].items():
        print(f"{task:>11}: pdlib {m['pdlib'] * 1e3:8.1f} ms  diffusers {m['diffusers'] * 1e3:8.1f} ms  "
              f"ratio {result['ratio_pdlib_over_diffusers'][task]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
