"""Config builders of latent diffusion and flow matching, each with an optional latent perceptual loss (LPL;
Berrada Ifriqi et al. 2025): ``method.name`` ``latent`` and ``flow``, registered with ``pdlib.pipeline``.

- ``latent``: :class:`pdlib.methods.LatentDiffusion`, DDPM on the scaled latents of a frozen autoencoder.
  ``diffusion`` is the process on the latents and ``diffusion.parameterization`` the target (``eps``, ``v``
  or ``x0``).
- ``flow``: :class:`pdlib.methods.FlowMatching`, flow matching on the optimal-transport path, on latents
  (with ``method.kwargs.autoencoder``) or on the data themselves (without it). The ``diffusion`` section is
  not used; sampling integrates the learned ODE with ``sample.steps`` Euler steps (an integer, or ``null``
  for ``pdlib.methods.latent.DEFAULT_EULER_STEPS``), ``sample.sampler: ddim`` (the Euler method's alias)
  and ``sample.eta: 0``.

``method.kwargs``:

- ``autoencoder``: ``{preset: NAME, scale_factor: fit | NUMBER, **overrides}``, as ``lddgan``
  (``pdlib.adversarial_runs``): a ``pdlib.nets.AutoEncoder`` whose weights come from ``init_from``, the
  weights of an ``autoencoder`` run (a run folder, a file or ``experiment:NAME/RUN``). ``scale_factor: fit``
  (the default) sets it to 1 / std of the latents of the training set's first ``SCALE_IMAGES`` images,
  computed whenever the method is built, with the random draws of the data set (flips) fixed by
  ``data.seed``, so the number is the same in training, on resuming and for ``load_trained``. Required
  for ``latent``; for ``flow`` without it ``init_from`` holds the flow's own starting weights (as ``ddpm``).
- ``lpl``: ``null`` (no LPL) or a mapping of ``pdlib.perceptual.LatentPerceptualLoss`` options (``layers``,
  ``normalize``, ``depth_weights``, ``snr_threshold``, ``outlier_mask``; ``{}`` for its defaults), built on
  the same autoencoder; needs ``autoencoder``.
- ``lpl_weight``: w_LPL in ``L = L_diff + w_LPL * L_LPL``;
- ``denoiser_from``: the network's starting weights, from an earlier ``latent`` or ``flow`` run on the same
  autoencoder (a run folder, a file or ``experiment:NAME/RUN``; its ``net.*`` weights): the paper's
  post-training phase, in which a model pre-trained without LPL goes on with it (section 4.1, Tables 2 and
  4). When the source records its config (a training checkpoint; a book experiment's export) it must agree
  with this run on what makes the two one model (``model_identity``; ``init_from`` compared as the file it
  names), else the run is refused before it trains; any other weights file is only checked for its shapes.
  The source is read whenever the run is built, so resuming or loading the run needs it too (its weights
  are then replaced by the run's own): keep it, and do not train it further meanwhile. Latent runs only: a
  flow in pixel space takes its own starting weights from ``init_from``;
- the other options of the method's constructor: ``cond_drop_prob`` and ``min_snr_gamma`` for ``latent``,
  ``cond_drop_prob`` and ``time_scale`` for ``flow``.

The network (``model``, a UNet) works on latents: ``model.kwargs.in_channels`` defaults to the autoencoder's
``latent_channels`` and ``model.kwargs.image_size`` to ``data.size / factor`` (the latent side), both
overriding the preset; values given in ``model.kwargs`` that disagree are refused, as is an
``out_channels`` other than the latent channels (every target has the latent's shape).

The command-line recipe is chained presets: ``python -m pdlib train --config cifar10-autoencoder``, then
``--config cifar10-latent`` (or ``cifar10-latent-lpl``, ``cifar10-flow-lpl``); their ``init_from`` is the
autoencoder run's folder. The post-training phase is one more link: ``--config cifar10-latent-lpl-post``
continues ``cifar10-latent``'s network with LPL (``denoiser_from: runs/cifar10-latent``). Do not train a source
run further while a run that reads it is unfinished.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import replace

import torch
from torch import nn

from .adversarial_runs import SCALE_IMAGES, _net_spec, autoencoder_from
from .config import RunConfig, to_dict
from .methods.latent import SAMPLERS as FLOW_SAMPLERS
from .methods.latent import FlowMatching, LatentDiffusion
from .nets import AutoEncoder
from .perceptual.lpl import LatentPerceptualLoss
from .pipeline import build_data, build_net, build_process, read_weights, register_method, resolve_weights
from .train import Frozen, load_checkpoint

# What a config may not set in method.kwargs: the builder supplies these (the network, the process, the
# target from diffusion.parameterization, the shape from the network), and the autoencoder and the loss
# are given as specs under their own names.
_SUPPLIED = ("net", "process", "parameterization", "data_shape")


def _options(cls) -> list[str]:
    return [name for name in inspect.signature(cls).parameters if name not in _SUPPLIED]


LATENT_OPTIONS = (*_options(LatentDiffusion), "denoiser_from")
"""``method.kwargs`` of ``latent``: autoencoder, lpl, lpl_weight, cond_drop_prob, min_snr_gamma, denoiser_from."""

FLOW_OPTIONS = (*_options(FlowMatching), "denoiser_from")
"""``method.kwargs`` of ``flow``: lpl, lpl_weight, autoencoder, time_scale, cond_drop_prob, denoiser_from."""

LPL_OPTIONS = tuple(name for name in inspect.signature(LatentPerceptualLoss).parameters if name != "decoder")
"""Keys of ``method.kwargs.lpl``: layers, normalize, depth_weights, snr_threshold, outlier_mask."""


def _check_options(cfg: RunConfig, options) -> dict:
    unknown = sorted(set(cfg.method.kwargs) - set(options))
    if unknown:
        extra = (" (the target is diffusion.parameterization)" if "parameterization" in unknown else
                 " (the shape comes from the network)" if "data_shape" in unknown else "")
        raise ValueError(f"method.kwargs {unknown} are not options of {cfg.method.name}; expected some of "
                         f"{list(options)}{extra}")
    return dict(cfg.method.kwargs)


# ------------------------------------------------------------------------------------ the autoencoder
def scale_images(cfg: RunConfig) -> torch.Tensor:
    """The images behind ``scale_factor: fit``: the first ``SCALE_IMAGES`` training images (a generated set's
    or a data set's on disk; enough for one standard deviation, as latent diffusion fits it on its first
    batch, and a bounded cost each time the run is built). A data set's random draws (its flips) come from a
    generator seeded with ``data.seed`` and leave the global one as it was, so every build fits the same
    number."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.data.seed)
        data = build_data(cfg)
        if not isinstance(data, torch.Tensor):  # a Dataset of (image, label)
            return torch.stack([data[i][0] for i in range(min(SCALE_IMAGES, len(data)))])
    return data[:SCALE_IMAGES]


def _scale_factor(value):
    if value == "fit":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"method.kwargs.autoencoder.scale_factor must be 'fit' or a number > 0, got {value!r}")
    return float(value)


def latent_autoencoder(cfg: RunConfig, init: dict | None, spec) -> AutoEncoder:
    """The autoencoder ``method.kwargs.autoencoder`` describes (``{preset, scale_factor: fit | NUMBER,
    **overrides}``), with the weights of the ``autoencoder`` run that ``init_from`` names and its scale factor
    fitted (``scale_images``) or set."""
    preset, overrides = _net_spec(spec, "autoencoder")
    scale = _scale_factor(overrides.pop("scale_factor", "fit"))
    if init is None:
        raise ValueError(f"method.name={cfg.method.name!r} with method.kwargs.autoencoder needs init_from: the "
                         "weights of a trained autoencoder run (a run folder, a file or experiment:NAME/RUN)")
    if not any(k.startswith(("autoencoder.", "encoder.")) for k in init):
        some = ", ".join(sorted(init)[:3])
        raise ValueError(f"init_from holds no autoencoder (no 'autoencoder.*' weights; found {some}, ...): with "
                         "method.kwargs.autoencoder it must name the weights of an autoencoder run")
    ae = autoencoder_from(init, preset, overrides)
    if scale == "fit":
        ae.fit_scale_factor(scale_images(cfg))
    else:
        ae.scale_factor.fill_(scale)
    return ae


def lpl_from(spec, autoencoder: nn.Module | None) -> LatentPerceptualLoss | None:
    """``None`` for ``lpl: null``, else a ``LatentPerceptualLoss`` on ``autoencoder`` with the options of the
    mapping ``spec`` (``LPL_OPTIONS``)."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise ValueError(f"method.kwargs.lpl must be null or a mapping of LatentPerceptualLoss options "
                         f"{list(LPL_OPTIONS)} ({{}} for the defaults), got {spec!r}")
    unknown = sorted(set(spec) - set(LPL_OPTIONS))
    if unknown:
        raise ValueError(f"method.kwargs.lpl {unknown} are not options of LatentPerceptualLoss; expected some of "
                         f"{list(LPL_OPTIONS)}")
    if autoencoder is None:
        raise ValueError("method.kwargs.lpl needs method.kwargs.autoencoder: the latent perceptual loss compares "
                         "the autoencoder decoder's features")
    return LatentPerceptualLoss(autoencoder, **spec)


# ------------------------------------------------------------------------------------ the network
def _check_unet(cfg: RunConfig) -> None:
    if cfg.model.type != "unet":
        raise ValueError(f"method.name={cfg.method.name!r} on latents needs model.type 'unet', got {cfg.model.type!r}")


def latent_unet(cfg: RunConfig, autoencoder: AutoEncoder) -> nn.Module:
    """The config's UNet on the autoencoder's latents: ``in_channels`` and ``image_size`` default to the
    latent channels and side (``data.size / factor``) and must equal them when ``model.kwargs`` sets them,
    as must ``out_channels``."""
    _check_unet(cfg)
    side, rest = divmod(cfg.data.size, autoencoder.factor)
    if rest:
        raise ValueError(f"data.size={cfg.data.size} is not divisible by the autoencoder's downsampling factor "
                         f"{autoencoder.factor}")
    channels = autoencoder.latent_channels
    kwargs = dict(cfg.model.kwargs)
    wanted = {"in_channels": (channels, f"the autoencoder's latents have {channels} channels"),
              "image_size": (side, (f"the latents of data.size={cfg.data.size} images are {side}x{side} "
                                    f"(factor {autoencoder.factor})")),
              "out_channels": (channels, f"the network predicts a latent of {channels} channels")}
    for key, (value, why) in wanted.items():
        given = kwargs.setdefault(key, value)
        if given != value:
            raise ValueError(f"model.kwargs.{key}={given!r} does not fit the autoencoder: {why}, so {key} must be "
                             f"{value} (or left out to be derived)")
    return build_net(replace(cfg, model=replace(cfg.model, kwargs=kwargs)))


# ------------------------------------------------------------------------------------ post-training
#: UNet options that ``latent_unet`` derives from the autoencoder (a config may give or omit them alike)
_DERIVED = ("in_channels", "image_size", "out_channels")
_TIME_SCALE = inspect.signature(FlowMatching).parameters["time_scale"].default


def model_identity(config: dict) -> dict:
    """What makes two latent/flow runs one model, from a run's config (as ``to_dict`` gives it): the method, the
    autoencoder spec, the data set, side and seed (the fitted scale factor depends on them), the network with its
    derived sizes left out, and the process (``latent``) or the time scale (``flow``). ``init_from``, the
    autoencoder's weights, is compared apart, as the file it names."""
    method, data = config.get("method") or {}, config.get("data") or {}
    kwargs, model = method.get("kwargs") or {}, dict(config.get("model") or {})
    model["kwargs"] = {k: v for k, v in (model.get("kwargs") or {}).items() if k not in _DERIVED}
    out = {"method.name": method.get("name"), "method.kwargs.autoencoder": kwargs.get("autoencoder"),
           "data.name": data.get("name"), "data.size": data.get("size"), "data.seed": data.get("seed"), "model": model}
    if method.get("name") == "flow":
        out["method.kwargs.time_scale"] = kwargs.get("time_scale", _TIME_SCALE)
    else:
        process = config.get("diffusion") or {}
        out.update({f"diffusion.{k}": process.get(k) for k in ("schedule", "T", "parameterization")})
    return out


def _source(spec) -> tuple[dict, dict | None]:
    """The weights behind ``denoiser_from`` (a training checkpoint's EMA weights) and the config recorded with
    them: a checkpoint's metadata, or, for a book experiment's export (its metadata names the experiment, run and
    budget), that run's definition read beside the export; ``None`` for any other weights file."""
    path = resolve_weights(spec)
    if path.suffix != ".safetensors":
        state = load_checkpoint(path)
        return state.get("ema") or state["method"], state.get("metadata", {}).get("run_config")
    from safetensors import safe_open

    from .experiments import run_config

    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    config = None
    if {"experiment", "run", "budget"} <= set(meta):
        try:
            config = to_dict(run_config(meta["experiment"], meta["run"], meta["budget"], root=path.parent.parent))
        except (KeyError, ValueError):  # an experiment or run that no longer exists: the shapes alone are checked
            config = None
    return read_weights(path), config


def _init_difference(source_init, init) -> str | None:
    try:
        there = resolve_weights(source_init).resolve()
    except FileNotFoundError:
        return (f"init_from: the source's autoencoder weights {source_init!r} are not found from here (moved, or "
                "recorded relative to another folder), so the source's latent space cannot be checked")
    here = resolve_weights(init).resolve()
    return None if there == here else f"init_from: {str(there)!r} there, {str(here)!r} here"


def denoiser_weights(cfg: RunConfig, spec) -> dict:
    """The network weights (``net.*``, prefix removed) of the run ``spec`` names, for ``method.kwargs.denoiser_from``;
    ``ValueError`` when that run is not an earlier run of the same model (``model_identity`` and the autoencoder
    weights ``init_from`` names, where its config is recorded) or holds no network."""
    weights, source = _source(spec)
    if source is not None:
        there, here = model_identity(source), model_identity(to_dict(cfg))
        differ = [f"{key}: {there.get(key)!r} there, {here.get(key)!r} here" for key in {**there, **here}
                  if there.get(key) != here.get(key)]
        init = _init_difference(source.get("init_from"), cfg.init_from)
        differ += [init] if init else []
        if differ:
            raise ValueError(f"method.kwargs.denoiser_from={spec!r} is not an earlier run of this model, so its "
                             "network cannot be continued here; it differs in " + "; ".join(differ))
    own = {k.removeprefix("net."): v for k, v in weights.items() if k.startswith("net.")}
    if not own:
        some = ", ".join(sorted(weights)[:3])
        raise ValueError(f"method.kwargs.denoiser_from={spec!r} holds no network (no 'net.*' weights; found {some}, "
                         "...): it must name a latent or flow run")
    return own


def _continue(net: nn.Module, cfg: RunConfig, spec) -> None:
    if spec is None:
        return
    try:
        net.load_state_dict(denoiser_weights(cfg, spec))
    except RuntimeError as err:  # shapes: another network or latent channels
        raise ValueError(f"method.kwargs.denoiser_from={spec!r} does not fit this run's network: {err}") from err


# ------------------------------------------------------------------------------------ the builders
@register_method("latent")
def build_latent(cfg: RunConfig, init: dict | None) -> LatentDiffusion:
    """Latent diffusion (``LatentDiffusion``) from a config; see the module docstring."""
    kwargs = _check_options(cfg, LATENT_OPTIONS)
    spec = kwargs.pop("autoencoder", None)
    if spec is None:
        raise ValueError("method.name='latent' needs method.kwargs.autoencoder = {preset: ..., scale_factor: fit} "
                         "and init_from naming the weights of an autoencoder run")
    _check_unet(cfg)
    ae = Frozen(latent_autoencoder(cfg, init, spec))
    net = latent_unet(cfg, ae.net)
    _continue(net, cfg, kwargs.pop("denoiser_from", None))
    lpl = lpl_from(kwargs.pop("lpl", None), ae)
    return LatentDiffusion(net, build_process(cfg), ae, lpl, parameterization=cfg.diffusion.parameterization,
                           **kwargs)


def _check_flow_sampling(cfg: RunConfig) -> None:
    """Refuse, before any training, sample settings the Euler sampler cannot follow (``FlowMatching.sample``
    would stop on them after the run)."""
    s = cfg.sample
    if s.steps is not None and (isinstance(s.steps, (str, bool)) or not isinstance(s.steps, int)):
        raise ValueError(f"method.name='flow' integrates its ODE with Euler steps: sample.steps must be an integer "
                         f"count (or null for 50), got {s.steps!r}; respacings such as 'ddim25' are for diffusion")
    if s.sampler not in FLOW_SAMPLERS:
        raise ValueError(f"method.name='flow' samples with the deterministic Euler method: set sample.sampler to "
                         f"'ddim' (its alias for flow), got {s.sampler!r}")
    if s.eta != 0:
        raise ValueError(f"method.name='flow' samples deterministically: sample.eta must be 0, got {s.eta}")


@register_method("flow")
def build_flow(cfg: RunConfig, init: dict | None) -> FlowMatching:
    """Flow matching (``FlowMatching``) from a config, on latents or on the data; see the module docstring."""
    kwargs = _check_options(cfg, FLOW_OPTIONS)
    _check_flow_sampling(cfg)
    spec = kwargs.pop("autoencoder", None)
    if spec is None:  # pixel space: init_from holds the flow's own starting weights
        if kwargs.get("denoiser_from") is not None:
            raise ValueError("method.kwargs.denoiser_from is for a flow on latents (with method.kwargs.autoencoder); "
                             "a flow in pixel space takes its starting weights from init_from")
        kwargs.pop("denoiser_from", None)
        lpl = lpl_from(kwargs.pop("lpl", None), None)
        if cfg.model.type not in ("unet", "mlp2d"):
            raise ValueError(f"method.name='flow' needs model.type 'unet' or 'mlp2d', got {cfg.model.type!r}")
        method = FlowMatching(build_net(cfg), lpl, **kwargs)
        if init is not None:
            method.load_state_dict(init)
        return method
    _check_unet(cfg)
    ae = Frozen(latent_autoencoder(cfg, init, spec))
    net = latent_unet(cfg, ae.net)
    _continue(net, cfg, kwargs.pop("denoiser_from", None))
    lpl = lpl_from(kwargs.pop("lpl", None), ae)
    return FlowMatching(net, lpl, autoencoder=ae, **kwargs)


__all__ = ["FLOW_OPTIONS", "LATENT_OPTIONS", "LPL_OPTIONS", "build_flow", "build_latent", "denoiser_weights",
           "latent_autoencoder", "latent_unet", "lpl_from", "model_identity", "scale_images"]
