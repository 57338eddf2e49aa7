"""Config builders of the metric-function methods: ``method.name`` ``dual`` and ``casdm``, and metrics
given by name for ``ddpm`` (the "DDPM (x0 + LPIPS)" baseline of the Cas-DM paper, An et al. 2024, Table 1).

They plug into ``pdlib.pipeline`` (``register_method``), so ``python -m pdlib train --config cifar10-casdm``
and the book's experiments build these methods from a ``RunConfig``:

- ``method.kwargs.metric``: ``null``, ``lpips-vgg`` / ``lpips-alex`` (LPIPS at the images' own resolution),
  or a mapping ``{name: lpips-vgg, resize: 224, avgpool: true}`` (the Cas-DM variant, eq. 13); the LPIPS
  module is wrapped in ``pdlib.train.Frozen`` (never trained, not in checkpoints). Its weight is
  ``metric_weight`` for ``ddpm`` and ``dual``, ``lambda_metric`` for ``casdm`` (as the constructors name it).
- ``dual``: ``model`` is the UNet; its ``out_channels`` default to ``2C + 1`` (x0, eps, mixing logit).
- ``casdm``: ``model`` is theta (an eps UNet); ``method.kwargs.phi`` = ``{type: unet | fixres, preset: ...,
  **overrides}`` is phi, with ``in_channels = C`` and ``out_channels = C + 1`` by default (without it, phi
  is a UNet like theta: the paper's phi_UNet); the other
  ``method.kwargs`` go to :class:`pdlib.methods.CasDM` (``lambda_eps``, ``lambda_x0``, ``lambda_mu``,
  ``lambda_metric``, ``clip_x0_star``).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .adversarial_runs import perceptual_from
from .config import RunConfig
from .methods import DDPM, CasDM, DualDiffusion
from .nets import UNET_PRESETS, FixResCNN, UNet
from .pipeline import METHODS, build_net, build_process, register_method
from .train import Frozen

PHI_TYPES = ("unet", "fixres")
_pipeline_ddpm = METHODS["ddpm"]


def metric_from(spec) -> Frozen | None:
    """The frozen metric a config names: ``None``, ``"lpips-vgg"`` / ``"lpips-alex"`` or a mapping
    ``{name: lpips-vgg, resize: 224, avgpool: true}`` (the other keys go to ``pdlib.perceptual.LPIPS``)."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        options = dict(spec)
        name = options.pop("name", None)
        if name is None:
            raise ValueError(f"method.kwargs.metric needs a name (lpips-vgg or lpips-alex), got {spec!r}")
        from .perceptual import LPIPS

        perceptual_from(name)  # checks the name
        return Frozen(LPIPS(name.removeprefix("lpips-"), **options))
    return Frozen(perceptual_from(spec))


def _with_metric(cfg: RunConfig) -> dict:
    kwargs = dict(cfg.method.kwargs)
    kwargs["metric"] = metric_from(kwargs.get("metric"))
    return kwargs


def _load(method: nn.Module, init: dict | None) -> nn.Module:
    if init is not None:
        method.load_state_dict(init)
    return method


def _check_config(cfg: RunConfig) -> None:
    """Dual diffusion and Cas-DM train a UNet whose (first) output is eps."""
    if cfg.model.type != "unet":
        raise ValueError(f"method.name={cfg.method.name!r} needs model.type 'unet', got {cfg.model.type!r}")
    if cfg.diffusion.parameterization != "eps":
        raise ValueError(f"method.name={cfg.method.name!r} predicts eps (and x0 besides): set "
                         f"diffusion.parameterization=eps, got {cfg.diffusion.parameterization!r}")


@register_method("ddpm")
def build_ddpm(cfg: RunConfig, init: dict | None) -> DDPM:
    """``pdlib.pipeline``'s DDPM builder, with ``method.kwargs.metric`` given by name (see the module
    docstring); without a metric it is that builder unchanged."""
    if cfg.method.kwargs.get("metric") is None:
        return _pipeline_ddpm(cfg, init)
    method = DDPM(build_net(cfg), build_process(cfg), parameterization=cfg.diffusion.parameterization,
                  **_with_metric(cfg))
    return _load(method, init)


@register_method("dual")
def build_dual(cfg: RunConfig, init: dict | None) -> DualDiffusion:
    _check_config(cfg)
    net = _unet_with_outputs(cfg, lambda c: 2 * c + 1)
    return _load(DualDiffusion(net, build_process(cfg), **_with_metric(cfg)), init)


def _unet_with_outputs(cfg: RunConfig, out_channels) -> UNet:
    """The config's UNet with ``out_channels(C)`` outputs unless ``model.kwargs`` sets them."""
    kwargs = dict(cfg.model.kwargs)
    preset = UNET_PRESETS[cfg.model.preset] if cfg.model.preset is not None else {}
    kwargs.setdefault("out_channels", out_channels(kwargs.get("in_channels", preset.get("in_channels", 3))))
    return build_net(replace(cfg, model=replace(cfg.model, kwargs=kwargs)))


def phi_from(spec: dict, channels: int) -> nn.Module:
    """Cas-DM's phi from ``{type: unet | fixres, preset: ..., **overrides}``, with ``in_channels =
    channels`` and ``out_channels = channels + 1`` unless given."""
    spec = dict(spec)
    kind = spec.pop("type", "unet")
    if kind not in PHI_TYPES:
        raise ValueError(f"method.kwargs.phi.type must be one of {PHI_TYPES}, got {kind!r}")
    preset = spec.pop("preset", None)
    spec.setdefault("in_channels", channels)
    spec.setdefault("out_channels", channels + 1)
    cls = UNet if kind == "unet" else FixResCNN
    return cls.from_preset(preset, **spec) if preset is not None else cls(**spec)


@register_method("casdm")
def build_casdm(cfg: RunConfig, init: dict | None) -> CasDM:
    _check_config(cfg)
    theta = build_net(cfg)
    kwargs = _with_metric(cfg)
    spec = kwargs.pop("phi", None)  # default: theta's architecture (the paper's phi_UNet)
    phi = _unet_with_outputs(cfg, lambda c: c + 1) if spec is None else phi_from(spec, theta.in_channels)
    return _load(CasDM(theta, phi, build_process(cfg), **kwargs), init)


__all__ = ["PHI_TYPES", "build_casdm", "build_ddpm", "build_dual", "metric_from", "phi_from"]
