"""The config builders of latent diffusion and flow matching with the latent perceptual loss (``method.name``
``latent`` and ``flow``, ``pdlib.latent_runs``): the frozen autoencoder read from an earlier ``autoencoder`` run,
LPL present or absent with its options passed through, the latent UNet's channels and side, the checks, flow in
pixel space, and chained runs that train, resume and sample. Tiny networks on 16x16 shapes keep it fast."""

import pytest
import torch

from pdlib.config import load_config
from pdlib.latent_runs import FLOW_OPTIONS, LATENT_OPTIONS, LPL_OPTIONS, scale_images
from pdlib.methods import AutoEncoderTraining, FlowMatching, LatentDiffusion
from pdlib.nets import AutoEncoder
from pdlib.perceptual import LatentPerceptualLoss
from pdlib.perceptual.lpl import DEFAULT_SNR_THRESHOLD
from pdlib.pipeline import (
    build_data,
    build_method,
    load_trained,
    read_weights,
    train_run,
)
from pdlib.train import Frozen, load_checkpoint

SIZE, LATENT_SIDE, LATENT_CHANNELS = 16, 8, 4  # cpu-f2: f = 2, 4 latent channels
COMMON = ["data.name=shapes", f"data.size={SIZE}", "data.n=64", "train.device=cpu", "train.progress=false",
          "train.batch_size=4", "train.steps=2", "train.log_every=1", "sample.n=2"]
TINY_AE = ["model.type=autoencoder", "model.preset=cpu-f2", "model.kwargs={channels: 8, norm_groups: 4}",
           "method.name=autoencoder", "method.kwargs={discriminator: {in_channels: 3, channels: 8, num_layers: 1}}",
           "sample.steps=null"]
TINY_UNET = ["model.type=unet", "model.preset=cpu-small", "model.kwargs={model_channels: 16}"]
AE_SPEC = "{preset: cpu-f2, channels: 8, norm_groups: 4, scale_factor: fit}"


def cfg(*overrides):
    """A tiny run on shapes: the cpu-small UNet at 16 base channels, the quadratic schedule, 3 sampler steps."""
    return load_config("shapes-ddpm", [*COMMON, *TINY_UNET, "diffusion.schedule=quadratic",
                                       "diffusion.parameterization=eps", "sample.steps=3", *overrides])


def latent(ae_dir, kwargs="", *overrides, name="latent"):
    """``method.name`` latent (or flow) on the autoencoder run in ``ae_dir``; ``kwargs`` adds to ``autoencoder``."""
    return cfg(f"method.name={name}", f"method.kwargs={{autoencoder: {AE_SPEC}{', ' + kwargs if kwargs else ''}}}",
               f"init_from={ae_dir}", *overrides)


@pytest.fixture(scope="module")
def ae_dir(tmp_path_factory):
    """Two steps of a tiny autoencoder run on shapes: the source every latent run here reads."""
    out = tmp_path_factory.mktemp("latent_runs") / "ae"
    trainer = train_run(load_config("shapes-ddpm", [*COMMON, *TINY_AE, f"out_dir={out}"]))
    assert isinstance(trainer.method, AutoEncoderTraining) and trainer.step == 2
    return out


def ae_weights(ae_dir):
    """The autoencoder's EMA weights as init_from reads them (keys without the ``autoencoder.`` prefix)."""
    init = read_weights(ae_dir / "checkpoint.pt")
    return {k.removeprefix("autoencoder."): v for k, v in init.items() if k.startswith("autoencoder.")}


def assert_autoencoder_from_run(method, ae_dir):
    """The method's autoencoder is frozen, holds the run's EMA weights, and is outside its weights."""
    assert isinstance(method.autoencoder, Frozen)
    ae = method.autoencoder.net
    assert isinstance(ae, AutoEncoder)
    want = ae_weights(ae_dir)
    state = ae.state_dict()
    assert set(state) == set(want)
    for k, v in state.items():
        if k != "scale_factor":  # fitted to the data, not the run's
            assert torch.equal(v, want[k]), k
    assert all(not p.requires_grad for p in ae.parameters()) and not ae.training
    assert all(k.startswith("net.") for k in method.state_dict())
    owned = {id(p) for p in method.parameters()}
    assert not any(id(p) in owned for p in ae.parameters())


# ------------------------------------------------------------------------------------ the builders
def test_latent_builder_reads_a_frozen_autoencoder_from_init_from(ae_dir):
    method = build_method(latent(ae_dir))
    assert type(method) is LatentDiffusion and method.parameterization == "eps" and method.lpl is None
    assert_autoencoder_from_run(method, ae_dir)
    # the scale factor was fitted: the training set's latents have unit standard deviation
    ae = method.autoencoder.net
    data = build_data(latent(ae_dir))
    with torch.no_grad():
        assert float(ae.encode(data).std()) == pytest.approx(1.0, abs=0.02)
    assert float(ae.scale_factor) != 1.0
    fixed = build_method(cfg("method.name=latent", f"init_from={ae_dir / 'checkpoint.pt'}",  # a file also works
                             f"method.kwargs={{autoencoder: {AE_SPEC.replace('fit', '2.5')}}}"))
    assert float(fixed.autoencoder.scale_factor) == 2.5
    for target in ("v", "x0"):
        assert build_method(latent(ae_dir, "", f"diffusion.parameterization={target}")).parameterization == target


def test_flow_builder_reads_a_frozen_autoencoder_from_init_from(ae_dir):
    method = build_method(latent(ae_dir, "time_scale: 10.0", name="flow"))
    assert type(method) is FlowMatching and method.lpl is None and method.time_scale == 10.0
    assert_autoencoder_from_run(method, ae_dir)


@pytest.mark.parametrize("name", ["latent", "flow"])
def test_lpl_absent_present_and_its_options(ae_dir, name):
    assert build_method(latent(ae_dir, "lpl: null", name=name)).lpl is None
    options = "{layers: [1, 2], normalize: target, depth_weights: false, snr_threshold: 0.5, outlier_mask: false}"
    method = build_method(latent(ae_dir, f"lpl: {options}, lpl_weight: 2.5", name=name))
    assert isinstance(method.lpl, Frozen) and isinstance(method.lpl.net, LatentPerceptualLoss)
    lpl = method.lpl.net
    assert lpl.layers == (1, 2) and lpl.normalize == "target" and lpl.use_depth_weights is False
    assert lpl.snr_threshold == 0.5 and lpl.use_outlier_mask is False and method.lpl_weight == 2.5
    assert lpl.decoder.net is method.autoencoder.net  # the same (fitted) autoencoder
    defaults = build_method(latent(ae_dir, "lpl: {}", name=name)).lpl.net
    assert defaults.layers is None and defaults.normalize == "predicted" and defaults.use_depth_weights
    assert defaults.snr_threshold == DEFAULT_SNR_THRESHOLD and defaults.use_outlier_mask
    assert build_method(latent(ae_dir, "lpl: {snr_threshold: null}", name=name)).lpl.net.snr_threshold is None
    # the loss has its LPL term, and gradients reach the network through the decoder but not the decoder
    x = build_data(latent(ae_dir))[:4]
    out = method.loss(x, generator=torch.Generator().manual_seed(0))
    assert {"loss", "mse", "lpl"} <= set(out)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.net.parameters())
    assert all(p.grad is None for p in method.autoencoder.net.parameters())
    with pytest.raises(ValueError, match=r"\['gamma'\] are not options of LatentPerceptualLoss.*'snr_threshold'"):
        build_method(latent(ae_dir, "lpl: {gamma: 1}", name=name))
    with pytest.raises(ValueError, match="must be null or a mapping"):
        build_method(latent(ae_dir, "lpl: true", name=name))


def test_the_unet_takes_the_latent_channels_and_side(ae_dir):
    for name in ("latent", "flow"):
        net = build_method(latent(ae_dir, name=name)).net
        assert (net.in_channels, net.out_channels, net.image_size) == (LATENT_CHANNELS, LATENT_CHANNELS, LATENT_SIDE)
    # given and matching: accepted (the cifar10 presets write them out)
    build_method(latent(ae_dir, "", f"model.kwargs={{model_channels: 16, in_channels: {LATENT_CHANNELS}, "
                                    f"image_size: {LATENT_SIDE}}}"))
    for key, wrong, right in [("in_channels", 3, LATENT_CHANNELS), ("image_size", SIZE, LATENT_SIDE),
                              ("out_channels", 3, LATENT_CHANNELS)]:
        with pytest.raises(ValueError, match=rf"model.kwargs.{key}={wrong} .*{right}"):
            build_method(latent(ae_dir, "", f"model.kwargs={{model_channels: 16, {key}: {wrong}}}"))
    with pytest.raises(ValueError, match="image_size=16 .* 8x8"):
        build_method(latent(ae_dir, "", "model.kwargs={model_channels: 16, image_size: 16}", name="flow"))
    with pytest.raises(ValueError, match="model.type 'unet'"):
        build_method(latent(ae_dir, "", "model.type=mlp2d", "model.preset=null", "model.kwargs={}"))


def test_flow_refuses_sample_settings_the_euler_sampler_cannot_follow(ae_dir):
    for bad, match in [("sample.steps=ddim25", "integer count.*'ddim25'"), ("sample.sampler=ddpm", "sampler"),
                       ("sample.eta=1.0", "eta must be 0")]:
        with pytest.raises(ValueError, match=match):
            build_method(latent(ae_dir, "", bad, name="flow"))
        with pytest.raises(ValueError, match=match):  # in pixel space too
            build_method(cfg("method.name=flow", "method.kwargs={}", bad))
    build_method(latent(ae_dir, "", "sample.steps=null", name="flow"))  # null: the default 50 steps
    build_method(latent(ae_dir, "", "sample.steps=ddim25"))  # a respacing is fine for latent diffusion


def test_unknown_and_missing_options_are_refused(ae_dir):
    with pytest.raises(ValueError, match=r"\['foo'\] are not options of latent; expected some of .*'lpl_weight'"):
        build_method(latent(ae_dir, "foo: 1"))
    with pytest.raises(ValueError, match=r"\['parameterization'\].*diffusion.parameterization"):
        build_method(latent(ae_dir, "parameterization: v"))
    with pytest.raises(ValueError, match=r"\['min_snr_gamma'\] are not options of flow.*'time_scale'"):
        build_method(latent(ae_dir, "min_snr_gamma: 5", name="flow"))
    assert set(LATENT_OPTIONS) == {"autoencoder", "lpl", "lpl_weight", "cond_drop_prob", "min_snr_gamma",
                                   "denoiser_from"}
    assert set(FLOW_OPTIONS) == {"autoencoder", "lpl", "lpl_weight", "time_scale", "cond_drop_prob", "denoiser_from"}
    assert set(LPL_OPTIONS) == {"layers", "normalize", "depth_weights", "snr_threshold", "outlier_mask"}
    with pytest.raises(ValueError, match="needs method.kwargs.autoencoder"):
        build_method(cfg("method.name=latent", "method.kwargs={}", f"init_from={ae_dir}"))
    for name in ("latent", "flow"):
        with pytest.raises(ValueError, match="needs init_from"):
            build_method(cfg(f"method.name={name}", f"method.kwargs={{autoencoder: {AE_SPEC}}}"))
        with pytest.raises(ValueError, match="init_from holds no autoencoder"):
            build_method(cfg(f"method.name={name}", f"method.kwargs={{autoencoder: {AE_SPEC}}}"),
                         {"net.conv_in.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="scale_factor must be 'fit' or a number > 0"):
        build_method(cfg("method.name=latent", f"init_from={ae_dir}",
                         f"method.kwargs={{autoencoder: {AE_SPEC.replace('fit', 'fitted')}}}"))
    with pytest.raises(ValueError, match="lpl_weight"):
        build_method(latent(ae_dir, "lpl: {}, lpl_weight: -1"))


def test_flow_without_an_autoencoder_runs_in_pixel_space():
    method = build_method(cfg("method.name=flow", "method.kwargs={time_scale: 100.0}"))
    assert type(method) is FlowMatching and method.autoencoder is None and method.time_scale == 100.0
    assert method.net.in_channels == 3 and method.net.image_size == SIZE
    x = build_data(cfg())[:4]
    out = method.loss(x, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "mse"} and torch.isfinite(out["loss"])
    samples = method.sample(2, steps=2, progress=False, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, SIZE, SIZE)
    # init_from is the flow's own starting weights, as for ddpm
    g = torch.Generator().manual_seed(1)
    start = {k: v + 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in method.state_dict().items()}
    loaded = build_method(cfg("method.name=flow", "method.kwargs={}"), start)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, start[k]), k
    with pytest.raises(ValueError, match="lpl needs method.kwargs.autoencoder"):
        build_method(cfg("method.name=flow", "method.kwargs={lpl: {}}"))


def test_the_fitted_scale_does_not_depend_on_the_global_random_state(tmp_path):
    """A data set with random flips gives the same images (so the same scale factor) at every build."""
    from PIL import Image

    root = tmp_path / "folder"
    root.mkdir()
    for i in range(6):  # left-right asymmetric images: a flip changes them
        img = torch.zeros(SIZE, SIZE, 3, dtype=torch.uint8)
        img[:, : 3 + i] = 255
        Image.fromarray(img.numpy()).save(root / f"{i}.png")
    folder = cfg("data.name=folder", f"data.root={root}", "data.hflip=true")
    torch.manual_seed(0)
    first = scale_images(folder)
    state = torch.random.get_rng_state()
    torch.manual_seed(123)
    assert torch.equal(scale_images(folder), first)
    torch.manual_seed(0)
    scale_images(folder)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left as it was
    assert first.shape == (6, 3, SIZE, SIZE)
    flipped = sum(not torch.equal(first[i], first[i].flip(-1)) for i in range(6))
    assert flipped == 6


# ------------------------------------------------------------------------------------ chained runs
@pytest.mark.parametrize("name", ["latent", "flow"])
def test_chained_run_trains_resumes_and_samples(ae_dir, tmp_path, name):
    out = tmp_path / name
    args = [f"out_dir={out}"]
    run_cfg = latent(ae_dir, "lpl: {snr_threshold: 0.0}, lpl_weight: 3.0", *args, name=name)
    trainer = train_run(run_cfg)
    method = trainer.method
    assert type(method) is (LatentDiffusion if name == "latent" else FlowMatching) and trainer.step == 2
    assert {"loss", "mse", "lpl"} <= set(trainer.history[-1])
    assert all(r["lpl"] > 0 for r in trainer.history)  # gate open at every SNR: the LPL term always counts
    assert_autoencoder_from_run(method, ae_dir)
    assert trainer.model.autoencoder is method.autoencoder  # the EMA copy shares the frozen autoencoder
    saved = load_checkpoint(out / "checkpoint.pt")
    assert all(k.startswith("net.") for k in saved["method"]) and set(saved["method"]) == set(saved["ema"])
    scale = float(method.autoencoder.scale_factor)

    resumed = train_run(latent(ae_dir, "lpl: {snr_threshold: 0.0}, lpl_weight: 3.0", *args, "train.steps=3",
                               name=name), resume=True)
    assert resumed.step == 3 and [r["step"] for r in resumed.history] == [1, 2, 3]
    assert_autoencoder_from_run(resumed.method, ae_dir)
    assert float(resumed.method.autoencoder.scale_factor) == scale
    step3 = load_checkpoint(out / "checkpoint.pt")
    assert any(not torch.equal(v, saved["method"][k]) for k, v in step3["method"].items())

    loaded = load_trained(run_cfg)
    assert float(loaded.autoencoder.scale_factor) == scale
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, step3["ema"][k]), k
    images = loaded.sample(2, steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    assert images.shape == (2, 3, SIZE, SIZE)
    assert torch.isfinite(images).all() and images.abs().max() <= 1.0


# ------------------------------------------------------------------------------------ post-training
@pytest.fixture(scope="module")
def pretrained(ae_dir, tmp_path_factory):
    """Two steps of plain latent eps and of a latent flow on ``ae_dir``: the sources of the post-training runs."""
    root = tmp_path_factory.mktemp("pretrained")
    for name in ("latent", "flow"):
        train_run(latent(ae_dir, "", f"out_dir={root / name}", name=name))
    return root


def net_weights(run_dir):
    return {k.removeprefix("net."): v for k, v in read_weights(run_dir / "checkpoint.pt").items()}


@pytest.mark.parametrize("name", ["latent", "flow"])
def test_post_training_starts_from_the_earlier_runs_network_and_goes_on_with_lpl(ae_dir, pretrained, tmp_path, name):
    source = pretrained / name
    post = latent(ae_dir, f"lpl: {{snr_threshold: 0.0}}, denoiser_from: {source}", f"out_dir={tmp_path / 'post'}",
                  name=name)
    method = build_method(post)
    want = net_weights(source)  # the source's EMA network, not a fresh initialisation nor its raw weights
    for k, v in method.net.state_dict().items():
        assert torch.equal(v, want[k]), k
    raw = load_checkpoint(source / "checkpoint.pt")["method"]
    assert any(not torch.equal(v, raw[f"net.{k}"]) for k, v in method.net.state_dict().items())
    fresh = build_method(latent(ae_dir, "lpl: {snr_threshold: 0.0}", name=name))
    assert any(not torch.equal(v, want[k]) for k, v in fresh.net.state_dict().items())
    assert_autoencoder_from_run(method, ae_dir)
    # a file and the run's folder name the same weights
    by_file = build_method(latent(ae_dir, f"denoiser_from: {source / 'checkpoint.pt'}", name=name))
    assert all(torch.equal(v, want[k]) for k, v in by_file.net.state_dict().items())
    trainer = train_run(post)  # it trains with LPL from the loaded network, and resumes from its own checkpoint
    assert trainer.step == 2 and all(r["lpl"] > 0 for r in trainer.history)
    resumed = train_run(latent(ae_dir, f"lpl: {{snr_threshold: 0.0}}, denoiser_from: {source}",
                               f"out_dir={tmp_path / 'post'}", "train.steps=3", name=name), resume=True)
    saved = load_checkpoint(tmp_path / "post" / "checkpoint.pt")
    assert resumed.step == 3 and all(torch.equal(v, saved["method"][f"net.{k}"])
                                     for k, v in resumed.method.net.state_dict().items())


def test_post_training_refuses_a_source_of_another_model(ae_dir, pretrained, tmp_path):
    source = pretrained / "latent"
    with pytest.raises(ValueError, match=r"differs in diffusion\.parameterization: 'eps' there, 'v' here"):
        build_method(latent(ae_dir, f"denoiser_from: {source}", "diffusion.parameterization=v"))
    with pytest.raises(ValueError, match=r"differs in method\.name: 'latent' there, 'flow' here"):
        build_method(latent(ae_dir, f"denoiser_from: {source}", name="flow"))
    with pytest.raises(ValueError, match=r"differs in model: .*model_channels.: 16.*model_channels.: 32"):
        build_method(latent(ae_dir, f"denoiser_from: {source}", "model.kwargs={model_channels: 32}"))
    # sizes the builder derives from the autoencoder may be given or left out alike
    build_method(latent(ae_dir, f"denoiser_from: {source}", "model.kwargs={model_channels: 16, in_channels: 4}"))
    with pytest.raises(ValueError, match=r"differs in method\.kwargs\.time_scale: 1000\.0 there, 10\.0 here"):
        build_method(latent(ae_dir, f"denoiser_from: {pretrained / 'flow'}, time_scale: 10.0", name="flow"))
    build_method(latent(ae_dir, f"denoiser_from: {pretrained / 'flow'}, time_scale: 1000.0", name="flow"))
    # another autoencoder run (same shapes): the latents would mean something else
    other_ae = tmp_path / "ae2"
    other_ae.mkdir()
    (other_ae / "checkpoint.pt").write_bytes((ae_dir / "checkpoint.pt").read_bytes())
    with pytest.raises(ValueError, match=r"differs in init_from: '.*/ae/checkpoint.pt' there, '.*/ae2/checkpoint.pt' here"):
        build_method(latent(other_ae, f"denoiser_from: {source}"))
    moved = tmp_path / "moved"  # a source whose autoencoder cannot be found from here
    moved.mkdir()
    state = load_checkpoint(source / "checkpoint.pt")
    state["metadata"]["run_config"]["init_from"] = str(tmp_path / "gone")
    torch.save(state, moved / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"autoencoder weights '.*gone' are not found from here"):
        build_method(latent(ae_dir, f"denoiser_from: {moved}"))
    with pytest.raises(ValueError, match="differs in method.kwargs.autoencoder"):
        build_method(cfg("method.name=latent", f"init_from={ae_dir}", f"method.kwargs={{autoencoder: "
                         f"{AE_SPEC.replace('fit', '2.5')}, denoiser_from: {source}}}"))
    # a bare weights file records no config: only its shapes are checked
    from pdlib.pipeline import export_weights

    wider = build_method(latent(ae_dir, "", "model.kwargs={model_channels: 32}"))
    with pytest.raises(ValueError, match="does not fit this run's network"):
        build_method(latent(ae_dir, f"denoiser_from: {export_weights(wider, tmp_path / 'wider.safetensors')}"))
    autoencoder = load_trained(load_config("shapes-ddpm", [*COMMON, *TINY_AE, f"out_dir={ae_dir}"]))
    with pytest.raises(ValueError, match=r"holds no network \(no 'net\.\*' weights; found autoencoder\."):
        build_method(latent(ae_dir, f"denoiser_from: {export_weights(autoencoder, tmp_path / 'ae.safetensors')}"))
    with pytest.raises(ValueError, match=r"differs in method\.name: 'autoencoder' there"):  # its run, config known
        build_method(latent(ae_dir, f"denoiser_from: {ae_dir}"))
    # a book experiment's export names its run: that run's definition, read beside the export, is checked
    export = export_weights(build_method(latent(ae_dir)), tmp_path / "lpl-shapes" / "eps-s0.safetensors",
                            metadata={"experiment": "lpl-shapes", "run": "eps-s0", "budget": "smoke"})
    with pytest.raises(ValueError, match=r"differs in .*model: .*cpu-small.*init_from: .*lpl-shapes/autoencoder"):
        build_method(latent(ae_dir, f"denoiser_from: {export}"))
    with pytest.raises(FileNotFoundError, match="no weights at"):
        build_method(latent(ae_dir, f"denoiser_from: {tmp_path / 'missing'}"))
    with pytest.raises(ValueError, match="a flow in pixel space takes its starting weights from init_from"):
        build_method(cfg("method.name=flow", "sample.steps=2", f"method.kwargs={{denoiser_from: {source}}}"))


def test_lpl_experiment_design_is_fair():
    """lpl-shapes: each run with LPL differs from its twin without only in the loss (same autoencoder, network,
    optimiser, steps and seed); the ablations differ from eps-lpl-s0 in one LPL option; each post-training pair
    continues the same eps run for the same further steps, with and without LPL."""
    from pdlib.experiments import definition
    from pdlib.experiments.lpl import ABLATIONS, KINDS, LPL_DEFAULTS, POST_SEED_OFFSET, SEEDS, STEPS

    runs = definition("lpl-shapes", "book")

    def loss_only(a, b):
        assert {k for k in a if a[k] != b[k]} <= {"name", "method"}
        assert a["method"]["name"] == b["method"]["name"]
        same = {k: v for k, v in a["method"]["kwargs"].items() if k not in ("lpl", "lpl_weight")}
        assert same == {k: v for k, v in b["method"]["kwargs"].items() if k not in ("lpl", "lpl_weight")}

    for seed in SEEDS:
        for kind in KINDS:
            plain, lpl = runs[f"{kind}-s{seed}"], runs[f"{kind}-lpl-s{seed}"]
            loss_only(plain, lpl)
            assert plain["method"]["kwargs"]["lpl"] is None and lpl["method"]["kwargs"]["lpl"] == LPL_DEFAULTS
            assert plain["init_from"] == "run:autoencoder" and plain["train"]["seed"] == seed
            assert plain["train"]["steps"] == STEPS["book"]["latent"]
        post, post_lpl = runs[f"eps-post-s{seed}"], runs[f"eps-post-lpl-s{seed}"]
        loss_only(post, post_lpl)
        assert post_lpl["method"]["kwargs"]["lpl"] == LPL_DEFAULTS and post["method"]["kwargs"]["lpl"] is None
        for run in (post, post_lpl):
            assert run["method"]["kwargs"]["denoiser_from"] == f"run:eps-s{seed}"
            assert run["train"] == runs[f"eps-s{seed}"]["train"] | {"steps": STEPS["book"]["post"],
                                                                     "seed": seed + POST_SEED_OFFSET}
            assert run["diffusion"] == runs[f"eps-s{seed}"]["diffusion"] and run["model"] == runs["eps-s0"]["model"]
    main = runs["eps-lpl-s0"]
    for name, (_, change, weight) in ABLATIONS.items():
        loss_only(main, runs[name])
        assert runs[name]["method"]["kwargs"]["lpl"] == {**LPL_DEFAULTS, **change}
        assert runs[name]["method"]["kwargs"]["lpl_weight"] == weight
        assert (runs[name]["method"]["kwargs"]["lpl"], weight) != (LPL_DEFAULTS, main["method"]["kwargs"]["lpl_weight"])
