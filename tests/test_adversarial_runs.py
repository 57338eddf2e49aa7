"""The config builders of the adversarial methods: what a config must say, and the chained LDDGAN run that
reads its autoencoder from an earlier run."""

import pytest
import torch

from pdlib import pipeline
from pdlib.config import load_config
from pdlib.methods import DDGAN, LDDGAN, AutoEncoderTraining

TINY_AE = ["model.type=autoencoder", "model.preset=cpu-digits", "model.kwargs={channels: 16, norm_groups: 4}",
           "method.name=autoencoder", "method.kwargs={discriminator: {in_channels: 1, channels: 8, num_layers: 1}}",
           "data.name=digits", "data.size=8", "sample.steps=null", "train.device=cpu"]
TINY_GAN = ["data.name=digits", "data.size=8", "model.type=gan", "model.preset=cpu-small",
            "model.kwargs={in_channels: 1, image_size: 8, channels: 16, groups: 4}", "diffusion.schedule=ddgan",
            "diffusion.T=4", "diffusion.parameterization=x0", "sample.steps=null", "train.device=cpu"]
TINY_D = "{preset: cpu-small, in_channels: 1, image_size: 8, channels: 8}"


def test_ddgan_builder_and_its_checks():
    cfg = load_config("shapes-ddpm", TINY_GAN + [f"method.name=ddgan", f"method.kwargs={{discriminator: {TINY_D}, "
                                                  "space: pixel, rec_weight: 0.5, lazy_reg: 3}"])
    method = pipeline.build_method(cfg)
    assert isinstance(method, DDGAN) and method.rec_weight == 0.5 and method.lazy_reg == 3
    assert method.generator.in_channels == 1 and method.discriminator.in_channels == 1
    with pytest.raises(ValueError, match="ddgan' schedule"):
        pipeline.build_method(load_config("shapes-ddpm", TINY_GAN + ["diffusion.schedule=linear", "method.name=ddgan",
                                                                     f"method.kwargs={{discriminator: {TINY_D}}}"]))
    with pytest.raises(ValueError, match="model.type 'gan'"):
        pipeline.build_method(load_config("shapes-ddpm", ["method.name=ddgan", "diffusion.schedule=ddgan",
                                                          "diffusion.T=4", "sample.steps=null"]))
    with pytest.raises(ValueError, match="discriminator must be a mapping"):
        pipeline.build_method(load_config("shapes-ddpm", TINY_GAN + ["method.name=ddgan", "method.kwargs={}"]))
    with pytest.raises(ValueError, match="model.type"):
        load_config("shapes-ddpm", ["model.type=vae"])


def test_lddgan_reads_its_autoencoder_from_an_earlier_run(tmp_path):
    ae_cfg = load_config("shapes-ddpm", TINY_AE + ["train.steps=2", "train.batch_size=8", f"out_dir={tmp_path / 'ae'}",
                                                   "train.progress=false", "sample.n=2"])
    trainer = pipeline.train_run(ae_cfg)
    assert isinstance(trainer.method, AutoEncoderTraining)
    lddgan_kwargs = (f"method.kwargs={{discriminator: {{preset: cpu-latent, in_channels: 2, image_size: 4, depth: large,"
                     f" channels: 8}}, autoencoder: {{preset: cpu-digits, channels: 16, norm_groups: 4, "
                     f"scale_factor: fit}}}}")
    gan_model = "model.kwargs={in_channels: 2, image_size: 4, channels: 16, groups: 4, tanh: false}"
    cfg = load_config("shapes-ddpm", TINY_GAN + ["method.name=lddgan", lddgan_kwargs, gan_model,
                                                 f"init_from={tmp_path / 'ae'}"])
    method = pipeline.build_method(cfg)
    assert isinstance(method, LDDGAN) and method.weighted_learning
    ae = method.autoencoder.net
    # the autoencoder's weights are the earlier run's EMA weights, and the scale factor was fitted
    ema = pipeline.read_weights(tmp_path / "ae" / "checkpoint.pt")
    torch.testing.assert_close(ae.encoder.state_dict()[next(iter(ae.encoder.state_dict()))],
                               ema["autoencoder.encoder." + next(iter(ae.encoder.state_dict()))])
    from pdlib.data.images import digits

    with torch.no_grad():
        assert float(ae.encode(digits(size=8)[0]).std()) == pytest.approx(1.0, abs=0.02)
    fixed = load_config("shapes-ddpm", TINY_GAN + ["method.name=lddgan", lddgan_kwargs.replace("fit", "2.5"),
                                                   gan_model, f"init_from={tmp_path / 'ae'}"])
    assert float(pipeline.build_method(fixed).autoencoder.scale_factor) == 2.5
    with pytest.raises(ValueError, match="init_from"):
        pipeline.build_method(load_config("shapes-ddpm", TINY_GAN + ["method.name=lddgan", lddgan_kwargs, gan_model]))


def test_autoencoder_builder_perceptual_choices():
    with pytest.raises(ValueError, match="perceptual"):
        pipeline.build_method(load_config("shapes-ddpm", TINY_AE[:4] + [
            "method.name=autoencoder", "method.kwargs={perceptual: lpips-squeeze}", "data.name=digits",
            "sample.steps=null"]))
    with pytest.raises(ValueError, match="model.type 'autoencoder'"):
        pipeline.build_method(load_config("shapes-ddpm", ["method.name=autoencoder", "sample.steps=null"]))
