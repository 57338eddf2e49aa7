"""The GPU path must not rot unseen: every paper-scale preset, with its real (paper-size) network, runs on
the CPU through the command line on small files in the real on-disk format.

For each preset whose data lives on disk (``pdlib.config.preset_names()``, minus the generated sets):

- ``python -m pdlib train`` runs two steps (called in-process through ``pdlib.cli.main``);
- ``train --resume`` continues from the step-2 checkpoint to step 3, logging steps 1, 2, 3 once each;
- ``python -m pdlib eval`` draws 2 samples (2 sampler steps) and reports the preset's Inception metrics,
  computed with a random-weight FID Inception file (``eval.fid_weights``);

and for the cheapest of them ``torchrun --standalone --nproc_per_node=2 -m pdlib train`` trains two
steps with 2 gloo processes.

The 64- and 256-pixel presets (CelebA, CelebA-HQ) train two steps, which builds their network, reads their
data and draws their sample grid; resume and eval run on the 32x32 preset of the same method, which runs
the same commands on a smaller network and smaller images (``test_every_large_preset_has_a_small_counterpart``).
The latent perceptual loss check runs once per method and autoencoder.

Only the sizes that do not change the code path are cut: batch 2, 2 steps, 2 sampler steps, a handful of
images. T, the network and the data format are the preset's.
"""

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pdlib import cli
from pdlib import config as config_mod
from pdlib import pipeline
from test_data_images import _write_celeba, _write_cifar10  # tests/ is on sys.path (no __init__.py)
from test_metrics_images import _random_state_dict

GENERATED = {"toy2d", "shapes", "digits"}  # data sets built in memory; every other kind is read from disk
TORCHRUN_TIMEOUT_S = 600


# ------------------------------------------------------------------------------ the data writers
def _write_folder(root, cfg):
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (cfg.data.size, cfg.data.size, 3), dtype=np.uint8)).save(
            root / f"{i}.png")


WRITERS = {
    "cifar10": lambda root, cfg: _write_cifar10(root, n_train=2, n_test=1),  # 10 training images
    "celeba": lambda root, cfg: _write_celeba(root, n=3),
    "folder": _write_folder,
}


def _disk_presets():
    out = []
    for name in config_mod.preset_names():
        cfg = config_mod.load_config(name)
        if cfg.data.name not in GENERATED:
            out.append(name)
    return out


def _sources(name):
    """The earlier presets whose runs preset ``name`` reads (``init_from`` or ``method.kwargs.denoiser_from`` of
    the form ``runs/NAME``): {where: preset}, ``where`` being the config key."""
    cfg = config_mod.load_config(name)
    places = {"init_from": cfg.init_from, "method.kwargs.denoiser_from": cfg.method.kwargs.get("denoiser_from")}
    return {key: value.removeprefix("runs/") for key, value in places.items()
            if isinstance(value, str) and value.startswith("runs/")}


def _depth(name):
    """How many links of chained runs lead to preset ``name``: it runs after every preset it reads."""
    return max((1 + _depth(source) for source in _sources(name).values()), default=0)


PRESETS = _disk_presets()
PRESETS.sort(key=_depth)  # chained runs after their sources


def _cost(name):
    """Parameters times pixels: the relative cost of a training step (the network is built on ``meta``);
    infinite for the adversarial presets (torchrun is checked on the UNet presets) and for chained ones (the
    torchrun test does not train their source run)."""
    cfg = config_mod.load_config(name)
    if cfg.model.type != "unet" or cfg.init_from is not None:  # chained presets need their source run
        return math.inf
    with torch.device("meta"):
        n_params = sum(p.numel() for p in pipeline.build_net(cfg).parameters())
    return n_params * cfg.data.size ** 2


SMALL = 32  # CIFAR-10's image size: resume and eval run on the presets of this size


def _method_variant(cfg):
    """What decides the code that ``train --resume`` and ``eval`` run: the method, the network type and the
    method's options (their names: across the presets of one variant the values differ only in sizes,
    loss weights and learning rates)."""
    return cfg.method.name, cfg.model.type, tuple(sorted(cfg.method.kwargs or {}))


def _lpl_group(cfg):
    """The latent perceptual loss check goes through the autoencoder's decoder: one check per method and
    autoencoder run."""
    return cfg.method.name, cfg.init_from


def _lpl_checked():
    """{group: the preset whose LPL is checked}: the first by name of each ``_lpl_group``."""
    checked = {}
    for name in sorted(PRESETS):
        cfg = config_mod.load_config(name)
        if cfg.method.kwargs.get("lpl"):
            checked.setdefault(_lpl_group(cfg), name)
    return checked


LPL_CHECKED = _lpl_checked()


def _skip_unless_small(name):
    if config_mod.load_config(name).data.size > SMALL:
        pytest.skip(f"{name} trains two steps above; this command runs on the {SMALL}x{SMALL} preset of its method")


def test_every_large_preset_has_a_small_counterpart():
    """Resume and eval are only checked at 32x32: each larger preset needs a 32x32 one of the same variant."""
    small = {_method_variant(config_mod.load_config(n)) for n in PRESETS
             if config_mod.load_config(n).data.size <= SMALL}
    large = [n for n in PRESETS if config_mod.load_config(n).data.size > SMALL]
    assert large and small, "expected presets on both sides of the cut"
    missing = [n for n in large if _method_variant(config_mod.load_config(n)) not in small]
    assert not missing, f"no {SMALL}x{SMALL} preset runs the same code as {missing}: its resume/eval go untested"


def test_every_data_kind_on_disk_has_a_writer():
    """A new data set kind (pdlib.config.DATASETS) must get a writer here, or its presets go untested."""
    on_disk = set(config_mod.DATASETS) - GENERATED
    assert on_disk <= set(WRITERS), f"no test writer for the data set kind(s) {sorted(on_disk - set(WRITERS))}"
    assert PRESETS, "no paper-scale preset found in pdlib/configs"


# ------------------------------------------------------------------------------ md5 checks
# The small files cannot match the archives' md5 sums: keep torchvision's existence check only (as the
# no_md5 fixture of test_data_images.py does). A torchrun worker cannot see a monkeypatch, so it gets
# the same patch from a sitecustomize.py on its PYTHONPATH.
MD5_PATCH = """
import os

def _exists(fpath, md5=None):
    return os.path.isfile(fpath)

import torchvision.datasets.celeba
import torchvision.datasets.cifar

torchvision.datasets.cifar.check_integrity = _exists
torchvision.datasets.celeba.check_integrity = _exists
"""

# Each process of the torchrun job dies with its parent, so a timeout that kills the launcher leaves no
# orphaned worker behind (torchrun starts each worker in a new session, out of reach of killpg).
DIE_WITH_PARENT = """
try:
    import ctypes, signal
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except Exception:
    pass
"""


@pytest.fixture(scope="module")
def no_md5_module():
    import torchvision.datasets.celeba
    import torchvision.datasets.cifar

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torchvision.datasets.cifar, "check_integrity", exists)
        mp.setattr(torchvision.datasets.celeba, "check_integrity", exists)
        mp.setenv("PDLIB_PROGRESS", "0")
        yield


# ------------------------------------------------------------------------------ helpers
def _write_data(name, root):
    cfg = config_mod.load_config(name)
    writer = WRITERS.get(cfg.data.name)
    if writer is None:
        pytest.fail(f"preset {name}: data set kind {cfg.data.name!r} has no writer in {__file__}")
    writer(root, cfg)


def _common_args(name, data_root, out_dir):
    cfg = config_mod.load_config(name)
    args = ["--config", name, f"data.root={data_root}", f"out_dir={out_dir}", "train.device=cpu",
            "train.num_workers=0"]
    if cfg.model.type == "unet":  # a denoising diffusion GAN samples with its own few steps only
        args.append("sample.steps=2")
    # a chained run (LDDGAN after its autoencoder, LPL post-training after latent diffusion): the earlier runs' output
    args += [f"{key}={out_dir.parent.parent / source / 'run'}" for key, source in _sources(name).items()]
    return args


def _train_args(name, data_root, out_dir, steps):
    return ["train", *_common_args(name, data_root, out_dir), f"train.steps={steps}", "train.batch_size=2",
            "train.amp=null", "train.log_every=1",
            "sample.n=2"]  # the grid that train draws at its end: 2 images, 2 sampler steps


def _cli(argv):
    """``python -m pdlib ARGV`` in this process; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main([str(a) for a in argv]) == 0
    return out.getvalue()


def _checkpoint_step(path):
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])


def _log_records(out_dir):
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def _log_steps(out_dir):
    """The steps of the loss records (the log may also hold event records, such as a start header)."""
    return [r["step"] for r in _log_records(out_dir) if "step" in r]


@dataclasses.dataclass
class Run:
    name: str
    data_root: object
    out_dir: object
    printed: str
    step: int
    log_steps: list


#: presets whose run a chained preset reads: their folders stay until the session ends
SOURCES = {source for name in PRESETS for source in _sources(name).values()}


@pytest.fixture(scope="module", params=PRESETS)
def trained(request, tmp_path_factory, no_md5_module):
    """Two training steps of the preset through the command line; shared by the tests of this preset. A
    chained preset runs after the preset it starts from (PRESETS is ordered so), whose output it reads. The
    other presets' folders (a paper-size checkpoint can exceed 1 GB) are deleted after their tests."""
    name = request.param
    tmp = tmp_path_factory.getbasetemp() / name
    tmp.mkdir()
    data_root, out_dir = tmp / "data", tmp / "run"
    _write_data(name, data_root)
    printed = _cli(_train_args(name, data_root, out_dir, steps=2))
    yield Run(name, data_root, out_dir, printed, _checkpoint_step(out_dir / "checkpoint.pt"), _log_steps(out_dir))
    if name not in SOURCES:
        shutil.rmtree(tmp)


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(_random_state_dict(), path)
    return path


# ------------------------------------------------------------------------------ the tests
def test_train_two_steps(trained):
    assert trained.step == 2
    assert trained.log_steps == [1, 2]
    last = json.loads(trained.printed.strip().splitlines()[-1])  # train prints the last log record
    losses = [v for k, v in last.items() if k == "loss" or k.endswith("/loss")]  # one per phase, if several
    assert last["step"] == 2 and losses and all(math.isfinite(v) for v in losses)
    config = json.loads((trained.out_dir / "config.json").read_text())
    assert config["model"] == dataclasses.asdict(config_mod.load_config(trained.name).model), \
        "the run must use the preset's own (paper-size) network"
    assert any(trained.out_dir.glob("samples_*.png"))


def test_resume_continues_from_the_checkpoint(trained):
    _skip_unless_small(trained.name)
    printed = _cli([*_train_args(trained.name, trained.data_root, trained.out_dir, steps=3), "--resume"])
    assert _checkpoint_step(trained.out_dir / "checkpoint.pt") == 3
    assert _log_steps(trained.out_dir) == [1, 2, 3]
    assert json.loads(printed.strip().splitlines()[-1])["step"] == 3


def test_eval_reports_inception_metrics(trained, fid_weights, no_md5_module, tmp_path):
    cfg = config_mod.load_config(trained.name)
    if cfg.model.type == "autoencoder":
        pytest.skip("an autoencoder reconstructs; its generative model is the LDDGAN preset that uses it")
    _skip_unless_small(trained.name)
    printed = _cli(["eval", *_common_args(trained.name, trained.data_root, trained.out_dir), "--n-samples", 2,
                    "sample.batch_size=2", f"eval.fid_weights={fid_weights}", f"eval.stats_dir={tmp_path}",
                    "eval.allow_small=true"])
    results = json.loads(printed[printed.index("{"):])
    assert results["n_samples"] == 2
    assert cfg.eval.metrics
    for metric in cfg.eval.metrics:
        assert math.isfinite(results[metric]), (metric, results)


def test_lpl_term_reaches_the_network(trained):
    """Two smoke steps at batch 2 may gate no sample into the latent perceptual loss (a fifth of the timesteps
    pass): with the gate opened, the trained run's LPL goes through the preset's own decoder and its gradient
    reaches the network."""
    cfg = config_mod.load_config(trained.name)
    if not cfg.method.kwargs.get("lpl"):
        pytest.skip("no latent perceptual loss in this preset")
    first = LPL_CHECKED[_lpl_group(cfg)]
    if first != trained.name:
        pytest.skip(f"the same method and autoencoder as {first}, checked there")
    cfg = config_mod.load_config(trained.name, _common_args(trained.name, trained.data_root, trained.out_dir)[2:])
    method = pipeline.load_trained(cfg)
    method.lpl.net.snr_threshold = None  # every sample counts
    data = pipeline.build_data(cfg)
    x = torch.stack([data[i][0] for i in range(2)])
    out = method.loss(x, generator=torch.Generator().manual_seed(0))
    assert float(out["lpl"]) > 0 and math.isfinite(float(out["loss"]))
    out["loss"].backward()
    grads = [p.grad for p in method.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in method.autoencoder.net.parameters())


def test_torchrun_two_gloo_processes(tmp_path):
    """torchrun with 2 CPU processes runs the same train command, for the cheapest paper-scale preset."""
    name = min(PRESETS, key=_cost)
    data_root, out_dir = tmp_path / "data", tmp_path / "run"
    _write_data(name, data_root)
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(DIE_WITH_PARENT) + textwrap.dedent(MD5_PATCH))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PDLIB_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "pdlib", *_train_args(name, data_root, out_dir, steps=2)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun stops its workers on SIGTERM; they also die with it (PR_SET_PDEATHSIG)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TORCHRUN_TIMEOUT_S} s:\n{output[-5000:]}")
    assert proc.returncode == 0, f"torchrun exited with {proc.returncode}:\n{output[-5000:]}"
    assert _checkpoint_step(out_dir / "checkpoint.pt") == 2
    assert _log_steps(out_dir) == [1, 2]
    processes = [r["processes"] for r in _log_records(out_dir) if "processes" in r]  # the start header
    assert all(p == 2 for p in processes), processes
