"""What the latent perceptual loss costs per training step: time and activation memory, with and without it.

The latent perceptual loss (LPL; Berrada Ifriqi et al. 2025, "Boosting latent diffusion with perceptual
objectives", section 3, eq. 3) decodes the true and the predicted clean latent of every sample that passes
its SNR gate through the frozen decoder: the true one without a graph, the predicted one with a backward
pass through the decoder into the denoiser (no weight gradients of the decoder's own). This script builds,
on the same batch and device, the three model families of the paper's Table 3 (``pdlib.methods``):
``LatentDiffusion`` with the eps and with the v target and ``FlowMatching`` on the optimal-transport path,
each without and with ``pdlib.perceptual.LatentPerceptualLoss`` (the paper's settings: all decoder maps,
depth weights, the predicted map's statistics, the outlier mask, the gate SNR >= 3.07, w_LPL = 3), and
measures per configuration

* the **time** of one training step (``method.loss``, backward, ``AdamW.step()``), interleaved with the other
  configurations (``timing.time_training_steps``; medians, reported as the ratio to the same family
  without LPL);
* the **activation memory** of one step: the bytes of the tensors autograd saves for the backward pass
  (``torch.autograd.graph.saved_tensors_hooks``, each storage counted once), which is what grows with LPL
  and the part of training memory that a larger batch multiplies; on CUDA also the peak of
  ``torch.cuda.max_memory_allocated`` over the step, weights and optimiser state included;
* the share of uniformly drawn timesteps that pass the gate (the decoder runs on those samples only; the
  flow's path admits more of them than the quadratic schedule).

Weights are random (a step costs the same as with trained weights). The networks are the book's CPU pair
(``--net cpu``: the ``cpu-f2`` autoencoder on 16x16 images, the ``cpu-small`` UNet on its 8x8x4 latents,
as in ``python -m pdlib experiment lpl-shapes``) or the CIFAR-10 presets (``--net cifar10``: the
``lddgan-cifar10`` autoencoder, f = 2, and the ``ddpm-cifar10`` UNet on 16x16x4 latents).

    python benchmarks/lpl_cost.py --quick                     # < 1 minute on 2 CPU cores
    python benchmarks/lpl_cost.py --batch 64 --repeats 10 --threads 2
    python benchmarks/lpl_cost.py --device cuda --net cifar10 --batch 128 --repeats 20

Results go to ``benchmarks/results/lpl_cost[_quick].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import (add_step_timing_args, machine_facts, time_training_steps,  # benchmarks/timing.py (on sys.path)
                    resolve_step_timing_args, write_results)

from pdlib.data import shapes
from pdlib.experiments.lpl import gate_fraction
from pdlib.diffusion import GaussianDiffusion
from pdlib.methods import FlowMatching, LatentDiffusion
from pdlib.nets import AutoEncoder, UNet
from pdlib.perceptual import LatentPerceptualLoss
from pdlib.perceptual.lpl import DEFAULT_SNR_THRESHOLD
from pdlib.schedules import beta_schedule
from pdlib.train import Frozen

RESULTS = Path(__file__).resolve().parent / "results"
NETS = {"cpu": ("cpu-f2", "cpu-small", 16), "cifar10": ("lddgan-cifar10", "ddpm-cifar10", 32)}
FAMILIES = ("eps", "v", "flow")
LPL_WEIGHT = 3.0
QUICK = {"batch": 8, "repeats": 3, "warmup": 1}
DEFAULTS = {"batch": 64, "repeats": 10, "warmup": 2}


def build(family: str, with_lpl: bool, ae_preset: str, unet_preset: str, size: int, device) -> torch.nn.Module:
    """One configuration, seeded alike: the autoencoder (frozen), the UNet on its latents, the method."""
    torch.manual_seed(0)
    ae = Frozen(AutoEncoder.from_preset(ae_preset))
    side = size // ae.net.factor
    net = UNet.from_preset(unet_preset, in_channels=ae.net.latent_channels, out_channels=ae.net.latent_channels,
                           image_size=side)
    lpl = LatentPerceptualLoss(ae, snr_threshold=DEFAULT_SNR_THRESHOLD) if with_lpl else None
    if family == "flow":
        method = FlowMatching(net, lpl, LPL_WEIGHT, autoencoder=ae)
    else:
        method = LatentDiffusion(net, GaussianDiffusion(beta_schedule("quadratic", 1000)), ae, lpl, LPL_WEIGHT,
                                 parameterization=family)
    return method.to(device)


def saved_activation_bytes(method, x0: torch.Tensor) -> int:
    """Bytes of the activations autograd saves for backward in one ``method.loss(x0)``: the saved tensors,
    each storage once, without the parameters (weights that layers keep for their input gradient)."""
    weights = {p.untyped_storage().data_ptr() for p in method.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in method.buffers()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = method.loss(x0, generator=torch.Generator(device=x0.device).manual_seed(0))
    out["loss"].backward()
    method.zero_grad(set_to_none=True)
    return sum(storages.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", choices=sorted(NETS), default="cpu")
    add_step_timing_args(ap, DEFAULTS, QUICK)
    args = ap.parse_args()
    json_path, md_path = resolve_step_timing_args(ap, args, DEFAULTS, QUICK, RESULTS, "lpl_cost")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ae_preset, unet_preset, size = NETS[args.net]
    x0 = shapes(args.batch, size, generator=torch.Generator().manual_seed(1)).to(device)
    names = [f"{family}{'-lpl' if lpl else ''}" for family in FAMILIES for lpl in (False, True)]
    methods = {name: build(name.split("-")[0], name.endswith("-lpl"), ae_preset, unet_preset, size, device)
               for name in names}
    memory, peak, gates = {}, {}, {}
    for name, method in methods.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        memory[name] = saved_activation_bytes(method, x0)
        if device.type == "cuda":
            peak[name] = torch.cuda.max_memory_allocated(device)
        gates[name] = gate_fraction(method)  # None without LPL
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
                  for name, m in methods.items()}
    _, medians = time_training_steps(methods, optimizers, x0, warmup=args.warmup, repeats=args.repeats,
                                     device=device)
    rows = {}
    for family in FAMILIES:
        plain, lpl = family, f"{family}-lpl"
        rows[family] = {"ms": {"plain": round(1000 * medians[plain], 2), "lpl": round(1000 * medians[lpl], 2)},
                        "time_ratio": round(medians[lpl] / medians[plain], 3),
                        "activation_mb": {"plain": round(memory[plain] / 2**20, 2), "lpl": round(memory[lpl] / 2**20, 2)},
                        "activation_ratio": round(memory[lpl] / memory[plain], 3),
                        "gate_fraction": gates[lpl]}
        if peak:
            rows[family]["peak_mb"] = {"plain": round(peak[plain] / 2**20, 1), "lpl": round(peak[lpl] / 2**20, 1)}
    result = {"benchmark": "lpl_cost", "net": args.net, "autoencoder": ae_preset, "unet": unet_preset,
              "image_size": size, "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup,
              "lpl_weight": LPL_WEIGHT, "snr_threshold": DEFAULT_SNR_THRESHOLD, **machine_facts(device),
              "families": rows}
    lines = [f"LPL cost per training step ({args.net}: {ae_preset} + {unet_preset}, batch {args.batch}, "
             f"{result['device']}, {result['threads']} threads, {result['date']})", "",
             "| family | gated in | ms, plain | ms, LPL | time ratio | activations MB, plain | MB, LPL | "
             "memory ratio |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for family, row in rows.items():
        lines.append(f"| {family} | {row['gate_fraction']:.0%} | {row['ms']['plain']:.1f} | {row['ms']['lpl']:.1f} | "
                     f"{row['time_ratio']:.2f} | {row['activation_mb']['plain']:.1f} | {row['activation_mb']['lpl']:.1f} | "
                     f"{row['activation_ratio']:.2f} |")
    write_results(result, "\n".join(lines) + "\n", json_path, md_path)


if __name__ == "__main__":
    main()
