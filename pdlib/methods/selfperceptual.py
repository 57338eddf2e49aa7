"""The self-perceptual objective (Lin & Yang 2024, "Diffusion model with perceptual loss", section 3 and
Algorithm 1): a diffusion model trained with MSE is copied and frozen, and its own hidden features become
the perceptual metric for further training. Book chapter "The self-perceptual objective".

For a clean image x0, noise eps and t ~ U{0..T-1} the online network predicts v at x_t (eqs. 6-7); x0_hat
and eps_hat follow from v (eqs. 8-9). A second, independent timestep t' is drawn, both the true pair
(x0, eps) and the predicted pair (x0_hat, eps_hat) are diffused to t' (eqs. 10-11), and the loss is the
distance between the frozen network's features of the two (eq. 12):

    L_sp = || f*_l(forward(x0_hat, eps_hat, t'), t', c) - f*_l(forward(x0, eps, t'), t', c) ||^2.

At t' = t both inputs equal x_t (eq. 13), so the loss is exactly zero. The split formulation L_sp2
(eqs. 14-17) diffuses (x0_hat, eps) and (x0, eps_hat) separately and sums the two distances.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import _validate
from ..diffusion import GaussianDiffusion
from ..train import Frozen
from .ddpm import DDPM

#: Named layer sets of the paper's Table 2 (see ``resolve_layers``)
LAYER_SETS = ("mid", "encoder", "decoder", "encoder+mid")
T_PRIME = ("uniform", "near", "normal")  #: the paper's Table 3
DISTANCES = ("mse", "mae")  #: Table 4
FORMULATIONS = ("sp", "sp2")  #: Table 5


class SelfPerceptual(DDPM):
    """Train ``net`` with the self-perceptual loss against ``perceptual_net``, a frozen copy of an
    MSE-trained network (pass a copy: it is frozen in place).

    Args:
        net: the online network (e.g. a ``UNet``), usually started from the MSE weights.
        perceptual_net: the frozen network f*; it needs ``features(x, t, layers, y=None)`` and
            ``layer_names`` (as ``pdlib.nets.UNet``). It is wrapped in ``pdlib.train.Frozen``: no
            gradient reaches its weights, it never changes, and it is not part of this method's
            ``state_dict`` (so an SP checkpoint loads into a plain ``DDPM``). Gradients flow through it
            into ``net``.
        process: the diffusion process (the paper: zero-terminal-SNR schedule, T = 1000).
        parameterization: what ``net`` predicts: ``"v"`` (the paper), ``"eps"`` or ``"x0"``.
        layer: ``"mid"`` (the paper's choice), ``"encoder"``, ``"decoder"``, ``"encoder+mid"`` (Table 2),
            or a sequence of ``perceptual_net.layer_names``; distances of several layers are summed.
        t_prime: how t' is drawn (Table 3): ``"uniform"`` on {0..T-1}; ``"near"``: t + or - ``near_offset``
            (sign at random); ``"normal"``: ``round(N(t, normal_std ** 2))``; both clamped to [0, T-1]. The paper
            writes N(t, 100); we read 100 as the standard deviation (a spread of 10 steps would sit inside
            its t +- 40 row).
        distance: ``"mse"`` (mean squared, the paper) or ``"mae"`` (mean absolute) over feature elements.
        formulation: ``"sp"`` (eq. 12) or ``"sp2"`` (the split form, eq. 17).
        cond_drop_prob: as ``DDPM`` (the paper uses none in the SP phase).
    """

    def __init__(self, net: nn.Module, perceptual_net: nn.Module, process: GaussianDiffusion,
                 parameterization: str = "v", layer: str | Sequence[str] = "mid", t_prime: str = "uniform",
                 distance: str = "mse", *, formulation: str = "sp", near_offset: int = 40,
                 normal_std: float = 100.0, cond_drop_prob: float = 0.0, data_shape: tuple | None = None):
        super().__init__(net, process, parameterization, cond_drop_prob=cond_drop_prob, data_shape=data_shape)
        if parameterization == "eps" and float(process.alphas_cumprod[-1]) == 0.0:
            raise ValueError("this schedule ends at zero SNR, where x0_hat from an eps prediction divides by zero: "
                             "use parameterization='v' (the paper's) or 'x0'")
        inner = perceptual_net.net if isinstance(perceptual_net, Frozen) else perceptual_net
        if inner is net:
            raise ValueError("perceptual_net must be a copy of net (copy.deepcopy(net)), not net itself: freezing it "
                             "freezes the online network too (if it was already wrapped in Frozen, rebuild net)")
        if not callable(getattr(inner, "features", None)) or not hasattr(inner, "layer_names"):
            raise TypeError(f"perceptual_net needs features(x, t, layers) and layer_names (as pdlib.nets.UNet); "
                            f"got {type(inner).__name__}")
        self.perceptual_net = perceptual_net if isinstance(perceptual_net, Frozen) else Frozen(perceptual_net)
        self.layers = resolve_layers(layer, tuple(inner.layer_names))
        _validate.choice("t_prime", t_prime, T_PRIME)
        _validate.choice("distance", distance, DISTANCES)
        _validate.choice("formulation", formulation, FORMULATIONS)
        _validate.positive_int("near_offset", near_offset)
        if not normal_std > 0:
            raise ValueError(f"normal_std must be > 0, got {normal_std}")
        self.t_prime, self.distance, self.formulation = t_prime, distance, formulation
        self.near_offset, self.normal_std = near_offset, float(normal_std)

    def draw_t_prime(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The perceptual network's timesteps t' for training timesteps ``t`` (the paper's Table 3)."""
        T = self.process.T
        if self.t_prime == "uniform":
            return torch.randint(0, T, t.shape, generator=generator, device=t.device)
        if self.t_prime == "near":
            sign = torch.randint(0, 2, t.shape, generator=generator, device=t.device) * 2 - 1
            return (t + sign * self.near_offset).clamp(0, T - 1)
        noise = torch.randn(t.shape, generator=generator, device=t.device)
        return (t + self.normal_std * noise).round().long().clamp(0, T - 1)

    def feature_distance(self, pred: torch.Tensor, target: dict, t_prime: torch.Tensor, **cond) -> torch.Tensor:
        """Sum over the chosen layers of the mean squared (or absolute) difference between f*'s features of
        ``pred`` at ``t_prime`` and ``target``, the features of the true x_t' (eq. 12)."""
        feats = self.perceptual_net.features(pred, t_prime, self.layers, **cond)
        diff = {"mse": lambda a, b: (a - b).pow(2).mean(), "mae": lambda a, b: (a - b).abs().mean()}[self.distance]
        return sum(diff(feats[name], target[name]) for name in self.layers)

    def loss(self, x0: torch.Tensor, *, generator: torch.Generator | None = None, **cond) -> dict:
        """Algorithm 1: ``{"loss": L_sp (or L_sp2), "sp": the same, detached, "mse": the network's plain
        squared error to its target (for monitoring only: it gets no gradient)}``."""
        _validate.tensor("x0", x0, min_ndim=2)
        self.data_shape = tuple(x0.shape[1:])
        b = x0.shape[0]
        t = torch.randint(0, self.process.T, (b,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if self.cond_drop_prob > 0 and cond.get("y") is not None:
            cond = {**cond, "y": self._drop_labels(cond["y"], generator)}
        xt = self.process.q_sample(x0, t, eps)
        out = self.net(xt, t, **cond)
        eps_hat, x0_hat = self.process.split_prediction(xt, t, out, self.parameterization)
        t2 = self.draw_t_prime(t, generator)
        with torch.no_grad():  # the true branch needs no gradient: computed once, without a graph
            target = self.perceptual_net.features(self.process.q_sample(x0, t2, eps), t2, self.layers, **cond)
        if self.formulation == "sp":
            loss = self.feature_distance(self.process.q_sample(x0_hat, t2, eps_hat), target, t2, **cond)
        else:
            loss = (self.feature_distance(self.process.q_sample(x0_hat, t2, eps), target, t2, **cond)
                    + self.feature_distance(self.process.q_sample(x0, t2, eps_hat), target, t2, **cond))
        mse = (out.detach() - self.process.target(x0, eps, t, self.parameterization)).pow(2).mean()
        return {"loss": loss, "sp": loss.detach(), "mse": mse}


def resolve_layers(layer: str | Sequence[str], names: tuple[str, ...]) -> tuple[str, ...]:
    """The feature-map names a ``layer`` option stands for: ``"mid"``, ``"encoder"`` (every ``enc*`` level),
    ``"decoder"`` (every ``dec*`` level), ``"encoder+mid"``, or a sequence of names from ``names``."""
    if isinstance(layer, str):
        _validate.choice("layer", layer, LAYER_SETS)
        encoder = tuple(n for n in names if n.startswith("enc"))
        return {"mid": ("mid",), "encoder": encoder, "decoder": tuple(n for n in names if n.startswith("dec")),
                "encoder+mid": (*encoder, "mid")}[layer]
    layers = tuple(layer)
    bad = [n for n in layers if n not in names]
    if not layers or bad:
        raise ValueError(f"layer must be one of {LAYER_SETS} or a non-empty list of {names}; got {layer!r}")
    return layers


__all__ = ["DISTANCES", "FORMULATIONS", "LAYER_SETS", "T_PRIME", "SelfPerceptual", "resolve_layers"]
