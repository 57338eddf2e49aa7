"""Config builders of the adversarial methods: ``method.name`` ``ddgan``, ``lddgan`` and ``autoencoder``.

They plug into ``pdlib.pipeline`` (``register_method``), so ``python -m pdlib train --config cifar10-ddgan``
and the book's experiments build these methods from a ``RunConfig``:

- ``ddgan``: ``model`` names the generator (``type: gan``, a ``pdlib.nets.Generator`` preset and overrides);
  ``method.kwargs.discriminator`` the discriminator (``{preset: ..., **overrides}``); the other
  ``method.kwargs`` go to :class:`pdlib.methods.DDGAN` (``r1_gamma``, ``lazy_reg``, ``rec_weight``,
  ``space``, ``lr_g``, ``lr_d``). ``diffusion`` must use the ``ddgan`` schedule with its few steps.
- ``lddgan``: as ``ddgan``, plus ``method.kwargs.autoencoder`` = ``{preset: ..., scale_factor: fit | NUMBER,
  **overrides}``. The autoencoder's weights come from ``init_from`` (the weights of an ``autoencoder`` run:
  an earlier run, ``experiment:NAME/RUN``); ``scale_factor: fit`` sets it to 1 / std of the training set's
  latents, computed when the method is built (the same number each time for the same weights and data).
- ``autoencoder``: ``model`` (``type: autoencoder``) names a ``pdlib.nets.AutoEncoder`` preset;
  ``method.kwargs.discriminator`` the ``PatchDiscriminator`` settings, ``perceptual`` ``null`` or
  ``lpips-vgg`` / ``lpips-alex``; the rest go to :class:`pdlib.methods.AutoEncoderTraining`.
"""

from __future__ import annotations

import torch

from .config import RunConfig
from .methods import DDGAN, LDDGAN, AutoEncoderTraining
from .nets import AutoEncoder, Discriminator, Generator, PatchDiscriminator
from .pipeline import build_data, build_process, register_method

PERCEPTUAL = ("lpips-vgg", "lpips-alex")
SCALE_IMAGES = 512  #: images of a data set on disk behind ``scale_factor: fit``


def _net_spec(spec: dict | None, what: str) -> tuple[str | None, dict]:
    if not isinstance(spec, dict):
        raise ValueError(f"method.kwargs.{what} must be a mapping such as {{preset: cpu-small}}, got {spec!r}")
    spec = dict(spec)
    return spec.pop("preset", None), spec


def _build(cls, preset, kwargs):
    return cls.from_preset(preset, **kwargs) if preset is not None else cls(**kwargs)


def _check_gan_config(cfg: RunConfig) -> None:
    if cfg.model.type != "gan":
        raise ValueError(f"method.name={cfg.method.name!r} needs model.type 'gan' (a Generator preset), "
                         f"got {cfg.model.type!r}")
    if cfg.diffusion.schedule != "ddgan":
        raise ValueError(f"a denoising diffusion GAN uses the few-step 'ddgan' schedule, got "
                         f"diffusion.schedule={cfg.diffusion.schedule!r}")


def _generator_and_discriminator(cfg: RunConfig, kwargs: dict):
    generator = _build(Generator, cfg.model.preset, cfg.model.kwargs)
    preset, overrides = _net_spec(kwargs.pop("discriminator", None), "discriminator")
    return generator, _build(Discriminator, preset, overrides)


@register_method("ddgan")
def build_ddgan(cfg: RunConfig, init: dict | None) -> DDGAN:
    _check_gan_config(cfg)
    kwargs = dict(cfg.method.kwargs)
    generator, discriminator = _generator_and_discriminator(cfg, kwargs)
    method = DDGAN(generator, discriminator, build_process(cfg), **kwargs)
    if init is not None:
        method.load_state_dict(init)
    return method


def autoencoder_from(init: dict, preset: str | None, overrides: dict) -> AutoEncoder:
    """The autoencoder inside the weights of an ``autoencoder`` run (keys ``autoencoder.*``) or of an
    ``AutoEncoder`` alone."""
    ae = _build(AutoEncoder, preset, overrides)
    prefix = "autoencoder."
    own = {k.removeprefix(prefix): v for k, v in init.items() if k.startswith(prefix)} or init
    ae.load_state_dict(own)
    return ae


@register_method("lddgan")
def build_lddgan(cfg: RunConfig, init: dict | None) -> LDDGAN:
    _check_gan_config(cfg)
    if init is None:
        raise ValueError("lddgan needs init_from: the weights of a trained autoencoder run "
                         "(a run folder, a file or experiment:NAME/RUN)")
    kwargs = dict(cfg.method.kwargs)
    generator, discriminator = _generator_and_discriminator(cfg, kwargs)
    preset, overrides = _net_spec(kwargs.pop("autoencoder", None), "autoencoder")
    scale = overrides.pop("scale_factor", "fit")
    ae = autoencoder_from(init, preset, overrides)
    if scale == "fit":
        data = build_data(cfg)
        if not isinstance(data, torch.Tensor):  # a Dataset of (image, label): the first SCALE_IMAGES images
            data = torch.stack([data[i][0] for i in range(min(SCALE_IMAGES, len(data)))])
        ae.fit_scale_factor(data)
    else:
        ae.scale_factor.fill_(float(scale))
    return LDDGAN(generator, discriminator, build_process(cfg), ae, **kwargs)


def perceptual_from(name):
    """``None`` or an LPIPS distance named ``lpips-vgg`` / ``lpips-alex`` (needs ``python -m pdlib weights``)."""
    if name is None:
        return None
    if name not in PERCEPTUAL:
        raise ValueError(f"method.kwargs.perceptual={name!r} is not valid; expected null or one of {PERCEPTUAL}")
    from .perceptual import LPIPS

    return LPIPS(name.removeprefix("lpips-"))


@register_method("autoencoder")
def build_autoencoder(cfg: RunConfig, init: dict | None) -> AutoEncoderTraining:
    if cfg.model.type != "autoencoder":
        raise ValueError(f"method.name='autoencoder' needs model.type 'autoencoder', got {cfg.model.type!r}")
    kwargs = dict(cfg.method.kwargs)
    ae = _build(AutoEncoder, cfg.model.preset, cfg.model.kwargs)
    _, d_kwargs = _net_spec(kwargs.pop("discriminator", {"in_channels": ae.in_channels}), "discriminator")
    method = AutoEncoderTraining(ae, PatchDiscriminator(**d_kwargs), perceptual_from(kwargs.pop("perceptual", None)),
                                 data_shape=(ae.in_channels, cfg.data.size, cfg.data.size), **kwargs)
    if init is not None:
        method.load_state_dict(init)
    return method


__all__ = ["PERCEPTUAL", "autoencoder_from", "build_autoencoder", "build_ddgan", "build_lddgan", "perceptual_from"]
