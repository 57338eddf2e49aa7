"""What the LPIPS term costs in a Cas-DM training step, next to plain DDPM, at CIFAR-10 resolution (32x32).

Cas-DM (An et al. 2024, "Bring Metric Functions into Diffusion Models", eq. 13) measures LPIPS on images
resized bilinearly to 224x224, so every training step runs a VGG16 forward pass on 2B images of 224x224
(prediction and target) and a backward pass through the prediction's. This script times, on the same
batch and device, one training step (``method.loss``, backward, ``AdamW.step()``) of

* ``ddpm``: plain DDPM, eps target (``pdlib.methods.DDPM``, network theta);
* ``casdm``: Cas-DM without metric (theta + phi, ``pdlib.methods.casdm.CasDM``);
* ``casdm+lpips32``: Cas-DM + ``LPIPS(net="vgg", avgpool=True)`` on the 32x32 images as they are;
* ``casdm+lpips224``: Cas-DM + ``LPIPS(net="vgg", avgpool=True, resize=224)``, the paper's setting;

each with its own networks and optimiser, interleaved on every repeat (the order rotates), and reports
the medians as ratios to the DDPM step and to the Cas-DM step without metric. theta is a UNet preset
(``--net``: ``cpu-small`` by default, ``improved-cifar10`` for the paper's backbone on a GPU); phi is the
same UNet preset with C + 1 output channels, or with ``--phi fixres`` a ``FixResCNN`` (phi_Fix-Res; preset
``--fixres-preset``, by default ``cpu`` next to ``cpu-small`` and ``casdm-cifar10`` otherwise). The metric
weight is the paper's 0.1.

It also counts, from the LPIPS module's own layers (a pass on the ``meta`` device records every
convolution's input and output shapes), the multiply-accumulates of the VGG16 feature extractor that
LPIPS runs on one image at 32 and at 224 pixels. The LPIPS weights come from ``python -m pdlib weights``;
without them (``pdlib.WeightsUnavailableError``) the networks get random weights, which cost the same,
and the output says so.

    python benchmarks/casdm_cost.py --quick                         # < 1 minute on 2 CPU cores
    python benchmarks/casdm_cost.py --batch 8 --repeats 5 --threads 1
    python benchmarks/casdm_cost.py --device cuda --net improved-cifar10 --batch 16 --repeats 20
    python benchmarks/casdm_cost.py --device cuda --net improved-cifar10 --phi fixres --batch 16 --repeats 20

Results go to ``benchmarks/results/casdm_cost[_quick].json`` and ``.md`` (``--json`` / ``--markdown`` to
change; the ``--quick`` run writes the ``_quick`` files, so it never overwrites a measurement).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from timing import (add_step_timing_args, machine_facts, time_training_steps,  # benchmarks/timing.py (on sys.path)
                    resolve_step_timing_args, write_results)
from torch import nn

import pdlib
from pdlib.diffusion import GaussianDiffusion
from pdlib.methods import DDPM
from pdlib.nets.fixres import PRESETS as FIXRES_PRESETS
from pdlib.nets.fixres import FixResCNN
from pdlib.nets.unet import PRESETS as UNET_PRESETS
from pdlib.nets.unet import UNet
from pdlib.perceptual.lpips import LPIPS
from pdlib.schedules import linear_betas
from pdlib.train import Frozen

RESULTS = Path(__file__).resolve().parent / "results"
SIZE, CHANNELS, T = 32, 3, 1000
CONFIGS = ("ddpm", "casdm", "casdm+lpips32", "casdm+lpips224")
LABELS = {"ddpm": "DDPM (eps)", "casdm": "Cas-DM, no metric", "casdm+lpips32": "Cas-DM + LPIPS at 32 px",
          "casdm+lpips224": "Cas-DM + LPIPS resized to 224 px (paper)"}
QUICK = dict(batch=2, repeats=3, warmup=1)
DEFAULTS = dict(batch=8, repeats=5, warmup=2)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------ FLOPs
def lpips_backbone_macs(lpips_module: LPIPS, size: int) -> dict:
    """Multiply-accumulates of the backbone that ``lpips_module`` runs on one ``size x size`` image, and of
    its 1x1 "linear" heads, from the shapes its convolutions see (a pass of a copy on the meta device)."""
    net = copy.deepcopy(lpips_module.model.net).to("meta")
    convs: list[int] = []

    def hook(mod: nn.Conv2d, args, out):
        kh, kw = mod.kernel_size
        convs.append(out[0].numel() * (mod.in_channels // mod.groups) * kh * kw)  # per image (batch 1)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        feats = net(torch.empty(1, 3, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    heads = sum(f[0].numel() for f in feats)  # each head: a 1x1 convolution from C_l channels to 1
    return {"conv_layers": len(convs), "backbone_macs": sum(convs), "head_macs": heads,
            "feature_maps": [list(f.shape[1:]) for f in feats]}


# ------------------------------------------------------------------------------------------ setup
def make_lpips(resize: int | None) -> tuple[LPIPS, bool]:
    """The Cas-DM LPIPS variant (VGG16, average pooling), pretrained if its weights are on disk."""
    try:
        return LPIPS(net="vgg", avgpool=True, resize=resize), True
    except pdlib.WeightsUnavailableError:
        return LPIPS(net="vgg", pretrained=False, avgpool=True, resize=resize), False


def build(args, device) -> tuple[dict, dict, dict]:
    """The four methods (each with its own networks, seeded alike), their optimisers and some facts."""
    from pdlib.methods.casdm import CasDM  # written alongside this script; imported here for a clear error

    process = GaussianDiffusion(linear_betas(T))
    unet_kw = dict(image_size=SIZE, in_channels=CHANNELS)

    def theta():
        return UNet.from_preset(args.net, **unet_kw)

    def phi():
        if args.phi == "fixres":
            return FixResCNN.from_preset(args.fixres_preset, in_channels=CHANNELS)
        return UNet.from_preset(args.net, out_channels=CHANNELS + 1, **unet_kw)

    lp32, pretrained32 = make_lpips(None)
    lp224, pretrained224 = make_lpips(224)
    metrics = {"casdm": None, "casdm+lpips32": Frozen(lp32), "casdm+lpips224": Frozen(lp224)}
    methods = {}
    for name in CONFIGS:
        torch.manual_seed(0)
        if name == "ddpm":
            methods[name] = DDPM(theta(), process, "eps")
        else:
            methods[name] = CasDM(theta(), phi(), process, metric=metrics[name], lambda_metric=0.1)
    methods = {k: m.to(device).train() for k, m in methods.items()}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in methods.items()}
    facts = {
        "lpips_pretrained": pretrained32 and pretrained224, "lpips_label": lp224.label,
        "parameters": {k: _count(m) for k, m in methods.items()},
        "theta_parameters": _count(methods["ddpm"].net), "phi_parameters": _count(methods["casdm"].phi),
        "vgg16": {str(s): lpips_backbone_macs(lp, s) for s, lp in ((32, lp32), (224, lp224))},
    }
    return methods, opts, facts


# ------------------------------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    r, ratio = result, result["ratio"]
    phi = f"FixResCNN `{r['fixres_preset']}`" if r["phi"] == "fixres" else f"UNet `{r['net']}` (C + 1 outputs)"
    weights = ("pretrained LPIPS weights" if r["lpips_pretrained"] else
               "**random LPIPS weights** (`python -m pdlib weights` not run; the cost is the same)")
    lines = [
        f"# Cas-DM training-step cost at {SIZE}x{SIZE}" + (" (quick run)" if r["quick"] else ""),
        "",
        f"{r['date']}, {r['device']} ({r['gpu'] or r['machine']}), torch {r['torch']}, threads {r['threads']}, "
        f"1-min load {r['load_average_1min']:.1f}; batch {r['batch']}, {r['repeats']} interleaved repeats "
        f"(medians); theta UNet `{r['net']}` ({r['theta_parameters']:,} parameters), phi {phi} "
        f"({r['phi_parameters']:,}); {weights}.",
        "",
        "| configuration | step time / DDPM | step time / Cas-DM without metric |",
        "|---|--:|--:|",
    ]
    for name in CONFIGS:
        lines.append(f"| {LABELS[name]} | {ratio['over_ddpm'][name]:.2f} | {ratio['over_casdm'][name]:.2f} |")
    v32, v224 = r["vgg16"]["32"], r["vgg16"]["224"]
    lines += [
        "",
        "| LPIPS input | VGG16 conv layers | VGG16 GMACs per image | linear heads MACs | relative |",
        "|---|--:|--:|--:|--:|",
        f"| 32x32 | {v32['conv_layers']} | {v32['backbone_macs'] / 1e9:.3f} | {v32['head_macs']:,} | 1 |",
        f"| 224x224 | {v224['conv_layers']} | {v224['backbone_macs'] / 1e9:.3f} | {v224['head_macs']:,} | "
        f"{v224['backbone_macs'] / v32['backbone_macs']:.0f} |",
        "",
        "Per training sample LPIPS runs the backbone on two images (x0' and x0) and back-propagates through "
        "one (about another forward's worth for the input gradient), so roughly 3x the per-image count; "
        "1 MAC = 2 FLOPs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_timing_args(ap, DEFAULTS, QUICK)
    ap.add_argument("--net", default="cpu-small", choices=sorted(UNET_PRESETS), help="UNet preset of theta (and phi)")
    ap.add_argument("--phi", default="unet", choices=("unet", "fixres"), help="phi's architecture")
    ap.add_argument("--fixres-preset", default=None, choices=sorted(FIXRES_PRESETS),
                    help="FixResCNN preset for --phi fixres (default: cpu with --net cpu-small, else casdm-cifar10)")
    args = ap.parse_args(argv)
    json_path, md_path = resolve_step_timing_args(ap, args, DEFAULTS, QUICK, RESULTS, "casdm_cost")
    if args.fixres_preset is None:
        args.fixres_preset = "cpu" if args.net == "cpu-small" else "casdm-cifar10"

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods, opts, facts = build(args, device)
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(args.batch, CHANNELS, SIZE, SIZE, generator=g) * 2 - 1).to(device)
    times, median = time_training_steps({n: methods[n] for n in CONFIGS}, opts, x0, warmup=args.warmup,
                                        repeats=args.repeats, device=device)
    result = {
        **machine_facts(device), "quick": args.quick, "image_size": SIZE,
        "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "net": args.net, "phi": args.phi,
        "fixres_preset": args.fixres_preset if args.phi == "fixres" else None, **facts,
        "median_s": median, "times_s": times,
        "ratio": {"over_ddpm": {n: median[n] / median["ddpm"] for n in CONFIGS},
                  "over_casdm": {n: median[n] / median["casdm"] for n in CONFIGS}},
    }
    write_results(result, markdown(result), json_path, md_path)
    return result


if __name__ == "__main__":
    main()
