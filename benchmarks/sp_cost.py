"""What a training step of the self-perceptual objective costs, next to plain MSE training.

The self-perceptual objective (Lin & Yang 2024, "Diffusion model with perceptual loss", section 3 and
Algorithm 1) trains a network against the hidden features of a frozen copy of itself: per step the online
network runs forward and backward as in MSE training, and the frozen copy runs on the real input x_t' (no
gradient needed) and on the predicted input (a forward pass, and a backward pass to carry the gradient into
the online network, with no weight gradients of its own). This script times, on the same batch and device,
one training step (``method.loss``, backward, ``AdamW.step()``) of

* ``mse``: ``DDPM(net, process, "v")``, the MSE phase;
* ``sp-mid``, ``sp-encoder``, ``sp-decoder``, ``sp-encoder+mid``: ``pdlib.methods.SelfPerceptual`` with
  that ``layer`` (the paper's Table 2; ``mid`` is its choice), whose frozen network runs
  ``UNet.features``, which stops at the last requested layer, and computes the real branch under
  ``torch.no_grad``;
* ``sp2-mid``: the split formulation L_sp2 (eq. 17) on the mid block;
* ``algorithm1``: the paper's Algorithm 1 transcribed line by line in this script (not pdlib's code):
  ``perceptual_model = deepcopy(model)``, ``requires_grad_(False)``, ``eval()``, and
  ``perceptual_model(x, t, c, return_feature="midblock")`` read as the network's FULL forward pass with
  the mid block's output (``UNet.mid_res2``) taken by a forward hook, for the real and the predicted input;

each with its own networks and optimiser, seeded alike, v-prediction, the linear schedule rescaled to zero
terminal SNR (T = 1000), interleaved on every repeat (the order rotates); the medians are reported as
ratios to the MSE step and to the Algorithm 1 step. ``sp-mid`` against ``algorithm1`` is the same loss
(checked before timing: same value on the same batch, with t, eps and t' drawn in the same order), so their
ratio is what pdlib saves by stopping the frozen network at the mid block. (In Algorithm 1 the real branch
builds no graph either: its input and the frozen weights need no gradient; what it pays for is the decoder
of both frozen passes, and the autograd records of the predicted one's.) On a GPU the ratio also includes
pdlib's bookkeeping (its timestep checks read ``t.min()`` / ``t.max()`` back from the device).

The networks are a UNet preset (``--net``: ``cpu-small`` at 16x16 by default, the book's CPU network;
``ddpm-cifar10`` at 32x32 on a GPU). A fresh UNet's output convolutions and residual branches start at zero
(which would hide the timestep from the mid-block features and make the equality check blind to t'); the
script gives every all-zero parameter small random values instead, standing in for MSE-trained weights
(the cost is the same). It also counts, from the network's own layers (a pass on the ``meta`` device), the
multiply-accumulates of a full forward pass and of the frozen partial passes, and turns them into an
expected step cost per configuration (a backward pass ~ 2 forwards with weight gradients, 1 without).

    python benchmarks/sp_cost.py --quick                               # < 1 minute on 2 CPU cores
    python benchmarks/sp_cost.py --batch 64 --repeats 10 --threads 2
    python benchmarks/sp_cost.py --device cuda --net ddpm-cifar10 --batch 128 --repeats 20 --amp bf16 --channels-last

Results go to ``benchmarks/results/sp_cost[_quick].json`` and ``.md`` (``--json`` / ``--markdown`` to
change; the ``--quick`` run writes the ``_quick`` files, so it never overwrites a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import (add_step_timing_args, machine_facts, time_training_steps,  # benchmarks/timing.py (on sys.path)
                    resolve_step_timing_args, write_results)
from torch import nn

from pdlib.diffusion import GaussianDiffusion
from pdlib.methods import DDPM
from pdlib.methods.selfperceptual import SelfPerceptual, resolve_layers
from pdlib.nets.unet import PRESETS as UNET_PRESETS
from pdlib.nets.unet import AttentionBlock, UNet
from pdlib.schedules import beta_schedule, rescale_zero_terminal_snr

RESULTS = Path(__file__).resolve().parent / "results"
CHANNELS, T = 3, 1000
CONFIGS = ("mse", "sp-mid", "sp-encoder", "sp-decoder", "sp-encoder+mid", "sp2-mid", "algorithm1")
SP_LAYER = {"sp-mid": "mid", "sp-encoder": "encoder", "sp-decoder": "decoder", "sp-encoder+mid": "encoder+mid",
            "sp2-mid": "mid"}
LABELS = {"mse": "MSE (DDPM, v)", "sp-mid": "SP, mid block (paper)", "sp-encoder": "SP, encoder levels",
          "sp-decoder": "SP, decoder levels", "sp-encoder+mid": "SP, encoder levels + mid block",
          "sp2-mid": "SP2 (split form, eq. 17), mid block",
          "algorithm1": "Algorithm 1 as printed (full frozen passes, hook on the mid block)"}
QUICK = {"batch": 4, "repeats": 3, "warmup": 1}
DEFAULTS = {"batch": 32, "repeats": 5, "warmup": 2}
CHECK_SEED = 7


def _count(module: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


# ------------------------------------------------------------------------------------------ Algorithm 1
class Algorithm1(nn.Module):
    """Lin & Yang (2024), Algorithm 1, as printed (unconditional: no ``c``), written without pdlib's methods.

    ``perceptual_model(x, t, c, return_feature="midblock")`` is read as a full forward pass of the frozen
    copy whose mid-block output (``UNet.mid_res2``) a forward hook keeps; the pseudo-code neither stops
    early nor wraps the real branch in ``no_grad``. Random draws in ``SelfPerceptual.loss``'s order:
    t, eps, t'."""

    def __init__(self, model: UNet, betas: torch.Tensor):
        super().__init__()
        self.model = model
        self.perceptual_model = copy.deepcopy(model)  # line 9
        self.perceptual_model.requires_grad_(False)  # line 10
        self.perceptual_model.eval()  # line 11
        self.alphas_cumprod = torch.cumprod(1.0 - betas.to(torch.float64), 0)  # float64, on the CPU
        self.T = len(betas)
        self._feature: torch.Tensor | None = None
        self.perceptual_model.mid_res2.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args, output: torch.Tensor) -> None:
        self._feature = output

    def train(self, mode: bool = True) -> Algorithm1:
        super().train(mode)
        self.perceptual_model.eval()  # frozen: always in eval mode (line 11)
        return self

    def _abar(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(x.device)[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))

    def forward_diffusion(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self._abar(t, x0)  # equation 2
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def perceptual_feature(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``perceptual_model(x, t, return_feature="midblock")``: the whole network runs, the hook keeps
        the mid block's output."""
        self.perceptual_model(x, t)
        feature, self._feature = self._feature, None
        return feature

    def loss(self, x_0: torch.Tensor, *, generator: torch.Generator | None = None) -> dict:
        b = x_0.shape[0]
        t = torch.randint(0, self.T, (b,), generator=generator, device=x_0.device)  # line 18
        eps = torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)  # line 19
        x_t = self.forward_diffusion(x_0, eps, t)  # line 20
        v_pred = self.model(x_t, t)  # line 24
        abar = self._abar(t, x_t)
        x_0_pred = abar.sqrt() * x_t - (1 - abar).sqrt() * v_pred  # line 25, equation 8
        eps_pred = abar.sqrt() * v_pred + (1 - abar).sqrt() * x_t  # line 26, equation 9
        tt = torch.randint(0, self.T, (b,), generator=generator, device=x_0.device)  # line 32
        x_tt = self.forward_diffusion(x_0, eps, tt)  # line 33
        x_tt_pred = self.forward_diffusion(x_0_pred, eps_pred, tt)  # line 34
        feature_real = self.perceptual_feature(x_tt, tt)  # line 38
        feature_pred = self.perceptual_feature(x_tt_pred, tt)  # line 39
        loss = F.mse_loss(feature_pred, feature_real)  # line 42
        return {"loss": loss, "sp": loss.detach()}


# ------------------------------------------------------------------------------------------ MACs
def forward_macs(net: UNet, size: int, layers: tuple[str, ...] | None = None) -> int:
    """Multiply-accumulates of one forward pass of ``net`` on one ``size x size`` image (convolutions,
    linear layers and the attention products), up to the last of ``layers`` (``UNet.features``) or to
    the output (None), from the shapes its layers see on the ``meta`` device."""
    net = copy.deepcopy(net).to("meta")
    macs: list[int] = []

    def conv(mod: nn.Conv2d, args, out):
        kh, kw = mod.kernel_size
        macs.append(out[0].numel() * (mod.in_channels // mod.groups) * kh * kw)

    def linear(mod: nn.Linear, args, out):
        macs.append(out[0].numel() * mod.in_features)

    def attention(mod: AttentionBlock, args, out):
        _, c, h, w = args[0].shape
        macs.append(2 * (h * w) ** 2 * c)  # q k^T and (attention) v

    hooks = {nn.Conv2d: conv, nn.Linear: linear, AttentionBlock: attention}
    handles = [m.register_forward_hook(hooks[type(m)]) for m in net.modules() if type(m) in hooks]
    try:
        x = torch.empty(1, net.in_channels, size, size, device="meta")
        t = torch.zeros(1, dtype=torch.long, device="meta")
        if layers is None:
            net(x, t)
        else:
            net.features(x, t, layers)
    finally:
        for h in handles:
            h.remove()
    return sum(macs)


def cost_model(net: UNet, size: int) -> dict:
    """Expected step cost of each configuration in units of one full forward pass: a forward pass is its
    MACs; a backward pass costs 2 forwards through trainable layers (input and weight gradients) and 1
    through the frozen network (input gradients only). Elementwise operations are not counted."""
    full = forward_macs(net, size)
    names = tuple(net.layer_names)
    partial = {name: forward_macs(net, size, resolve_layers(layer, names)) for name, layer in SP_LAYER.items()}
    share = {name: partial[name] / full for name in SP_LAYER}
    units = {"mse": 3.0}  # online forward + backward
    for name in SP_LAYER:
        branches = 2 if name.startswith("sp2") else 1
        # the real branch's features once (no graph), then per predicted branch a forward and a backward
        units[name] = 3.0 + (1 + 2 * branches) * share[name]
    units["algorithm1"] = 3.0 + 2.0 + share["sp-mid"]  # two full frozen forwards, backward from the mid block
    return {"full_forward_macs": full, "partial_forward_macs": partial, "frozen_forward_share": share,
            "expected_units": units, "expected_over_mse": {n: u / units["mse"] for n, u in units.items()}}


# ------------------------------------------------------------------------------------------ setup
def network(args) -> UNet:
    """The UNet preset at ``args.size``, seeded; every all-zero parameter (the zero-initialised output
    convolutions, GroupNorm biases) gets small random values, standing in for MSE-trained weights."""
    torch.manual_seed(0)
    net = UNet.from_preset(args.net, image_size=args.size, in_channels=CHANNELS)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return net


def build(args, device) -> tuple[dict, dict, dict]:
    """The methods (each with its own networks, seeded alike), their optimisers and some facts."""
    betas = rescale_zero_terminal_snr(beta_schedule("linear", T))
    process = GaussianDiffusion(betas)
    methods: dict[str, nn.Module] = {}
    for name in CONFIGS:
        net = network(args)
        if name == "mse":
            methods[name] = DDPM(net, process, "v")
        elif name == "algorithm1":
            methods[name] = Algorithm1(net, betas)
        else:
            formulation = "sp2" if name.startswith("sp2") else "sp"
            methods[name] = SelfPerceptual(net, copy.deepcopy(net), process, "v", layer=SP_LAYER[name],
                                           formulation=formulation)
    methods = {k: m.to(device).train() for k, m in methods.items()}
    if args.channels_last:
        methods = {k: m.to(memory_format=torch.channels_last) for k, m in methods.items()}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in methods.items()}

    def frozen(name: str) -> int:
        m = methods[name]
        if isinstance(m, SelfPerceptual):
            return _count(m.perceptual_net.net, trainable=False)
        return _count(m, trainable=False)

    facts = {"parameters": {k: _count(m) for k, m in methods.items()},
             "frozen_parameters": {k: frozen(k) for k in CONFIGS},
             "sp_layers": {name: list(methods[name].layers) for name in SP_LAYER},
             **cost_model(network(args), args.size)}
    return methods, opts, facts


def equal_work_check(methods: dict, x0: torch.Tensor, device: torch.device) -> dict:
    """``algorithm1`` and pdlib's ``sp-mid`` on the same batch, generators seeded alike, networks in eval
    mode (no dropout), float32: the same loss value, or an AssertionError."""
    values = {}
    for name in ("sp-mid", "algorithm1"):
        m = methods[name].eval()
        try:
            with torch.no_grad():
                g = torch.Generator(device=device).manual_seed(CHECK_SEED)
                values[name] = float(m.loss(x0, generator=g)["loss"])
        finally:
            m.train()
    rtol = 1e-4 if device.type == "cpu" else 1e-3
    diff = abs(values["sp-mid"] - values["algorithm1"])
    rel = diff / max(abs(values["algorithm1"]), 1e-30)
    check = {"seed": CHECK_SEED, "dtype": "float32", "sp-mid": values["sp-mid"], "algorithm1": values["algorithm1"],
             "abs_diff": diff, "rel_diff": rel, "rtol": rtol, "passed": rel <= rtol and values["algorithm1"] > 0}
    assert check["passed"], f"algorithm1 and sp-mid differ on the same batch: {check}"
    return check


# ------------------------------------------------------------------------------------------ report
def markdown(result: dict) -> str:
    r, ratio, median = result, result["ratio"], result["median_s"]
    precision = "bf16 autocast" if r["amp"] == "bf16" else "fp32"
    layout = ", channels_last" if r["channels_last"] else ""
    check = r["equal_work_check"]
    share = r["frozen_forward_share"]
    lines = [
        f"# Self-perceptual training-step cost at {r['image_size']}x{r['image_size']}"
        + (" (quick run)" if r["quick"] else ""),
        "",
        (f"{r['date']}, {r['device']} ({r['gpu'] or r['machine']}), torch {r['torch']}, threads {r['threads']}, "
        f"1-min load {r['load_average_1min']:.1f}; {precision}{layout}; batch {r['batch']}, {r['repeats']} "
        f"interleaved repeats (medians); UNet `{r['net']}` ({r['parameters']['mse']:,} parameters), "
        f"v-prediction, zero-terminal-SNR linear schedule, T = {T}."),
        "",
        ("| configuration | trainable parameters | frozen parameters | frozen forwards x share of a full one "
        "| expected / MSE (MACs) | median step (ms) | step time / MSE | step time / Algorithm 1 |"),
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name in CONFIGS:
        part = {"mse": "-", "algorithm1": "2 x 1.00"}.get(name, f"{3 if name == 'sp2-mid' else 2} x "
                                                              f"{share.get(name, 0):.2f}")
        lines.append(f"| {LABELS[name]} | {r['parameters'][name]:,} | {r['frozen_parameters'][name]:,} | {part} | "
                     f"{r['expected_over_mse'][name]:.2f} | {1e3 * median[name]:.1f} | "
                     f"{ratio['over_mse'][name]:.2f} | {ratio['over_algorithm1'][name]:.2f} |")
    lines += [
        "",
        (f"Network evaluations per step. MSE: one forward and one backward of the online network (3 forward-pass "
        f"units, a backward ~ 2 forwards). SP: the same, plus a partial forward of the frozen network without a "
        f"graph for the real branch and a partial forward + backward (input gradients only) for the predicted "
        f"branch: 3 + 3p units, p the share of a full forward computed up to the last feature layer "
        f"(p = {share['sp-mid']:.2f} for the mid block; SP2 has two predicted branches: 3 + 5p). Algorithm 1: 3 + "
        f"2 full frozen forwards + p. A full forward is {r['full_forward_macs'] / 1e6:,.1f} MMACs per image "
        f"(convolutions, linear layers, attention; elementwise operations not counted)."),
        "",
        (f"Equal work: on one batch with generators seeded alike (float32, eval mode), pdlib's `sp-mid` loss is "
        f"{check['sp-mid']:.6g} and Algorithm 1's {check['algorithm1']:.6g} (relative difference "
        f"{check['rel_diff']:.1e}, tolerance {check['rtol']:.0e})."),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_timing_args(ap, DEFAULTS, QUICK)
    ap.add_argument("--net", default="cpu-small", choices=sorted(UNET_PRESETS), help="UNet preset")
    ap.add_argument("--size", type=int, default=None, help="image size (default 16 for cpu-small, else 32)")
    ap.add_argument("--amp", default="none", choices=("none", "bf16"),
                    help="bf16: run the loss under torch.autocast(device, dtype=torch.bfloat16)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last methods and batch")
    args = ap.parse_args(argv)
    json_path, md_path = resolve_step_timing_args(ap, args, DEFAULTS, QUICK, RESULTS, "sp_cost")
    if args.size is None:
        args.size = 16 if args.net == "cpu-small" else 32

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods, opts, facts = build(args, device)
    g = torch.Generator().manual_seed(1)
    x0 = (torch.rand(args.batch, CHANNELS, args.size, args.size, generator=g) * 2 - 1).to(device)
    if args.channels_last:
        x0 = x0.to(memory_format=torch.channels_last)
    check = equal_work_check(methods, x0, device)
    def autocast():
        if args.amp == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    times, median = time_training_steps({n: methods[n] for n in CONFIGS}, opts, x0, warmup=args.warmup,
                                        repeats=args.repeats, device=device, autocast=autocast)
    result = {
        **machine_facts(device), "quick": args.quick, "image_size": args.size,
        "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup, "net": args.net, "amp": args.amp,
        "channels_last": args.channels_last, "T": T, "parameterization": "v",
        "schedule": "linear, rescaled to zero terminal SNR", **facts, "equal_work_check": check,
        "median_s": median, "times_s": times,
        "ratio": {"over_mse": {n: median[n] / median["mse"] for n in CONFIGS},
                  "over_algorithm1": {n: median[n] / median["algorithm1"] for n in CONFIGS}},
    }
    write_results(result, markdown(result), json_path, md_path)
    return result


if __name__ == "__main__":
    main()
