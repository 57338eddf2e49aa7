"""Build a run from a ``RunConfig`` and carry it out: train, sample, evaluate.

The command line (``python -m pdlib``) and the book's experiments both go through these functions, so a
chapter's artifacts come from exactly the code a user runs at paper scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import _validate
from .config import RunConfig, config_differences, from_dict, to_dict
from .diffusion import GaussianDiffusion
from .errors import ConfigMismatchError
from .methods import DDPM
from .progress import progress_bar
from .schedules import beta_schedule, rescale_zero_terminal_snr
from .train import Trainer, is_main_process, load_checkpoint, save_checkpoint
from .train.trainer import resolve_device

RESULTS_DIR = Path(__file__).resolve().parents[1] / "book" / "results"
# what a resume may change: where files go, the progress bar, and how far to train
RESUME_MAY_CHANGE = ("out_dir", "train.progress", "train.checkpoint_path", "train.log_path", "train.steps")


def build_data(cfg: RunConfig):
    """The training data: a tensor (generated sets, digits) or a Dataset (sets on disk)."""
    d = cfg.data
    g = torch.Generator().manual_seed(d.seed)
    if d.name == "toy2d":
        from .data import toy2d

        return toy2d(d.toy_set, d.n, g)
    if d.name == "shapes":
        from .data.shapes import shapes

        return shapes(d.n, size=d.size, generator=g)
    if d.name == "digits":
        from .data.images import digits

        return digits(size=d.size, split=d.split)[0]
    from .data import images

    if d.root is None:
        raise ValueError(f"data.root must name the folder of the {d.name} data set (see data/README.md)")
    if d.name == "cifar10":
        return images.cifar10(d.root, train=True, flip=d.hflip)
    if d.name == "celeba":
        return images.celeba(d.root, size=d.size, flip=d.hflip)
    return images.image_folder(d.root, size=d.size, flip=d.hflip)


def build_process(cfg: RunConfig) -> GaussianDiffusion:
    betas = beta_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    if cfg.diffusion.zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return GaussianDiffusion(betas)


def build_net(cfg: RunConfig) -> torch.nn.Module:
    m = cfg.model
    if m.type == "mlp2d":
        from .nets import MLP2D

        return MLP2D(**m.kwargs)
    from .nets.unet import UNet

    if m.preset is None:
        return UNet(**m.kwargs)
    return UNet.from_preset(m.preset, **m.kwargs)


MethodBuilder = Callable[[RunConfig, "dict | None"], nn.Module]
METHODS: dict[str, MethodBuilder] = {}


def register_method(name: str):
    """Register ``builder(cfg, init) -> method`` as the config's ``method.name``. ``init`` is the weights
    dict named by ``cfg.init_from`` (or None); the builder decides where they go (the trained network, a
    frozen copy, an autoencoder)."""

    def add(builder: MethodBuilder) -> MethodBuilder:
        METHODS[name] = builder
        return builder

    return add


@register_method("ddpm")
def _build_ddpm(cfg: RunConfig, init: dict | None) -> DDPM:
    method = DDPM(build_net(cfg), build_process(cfg), parameterization=cfg.diffusion.parameterization,
                  **cfg.method.kwargs)
    if init is not None:
        method.load_state_dict(init)
    return method


def build_method(cfg: RunConfig, init: dict | None = None) -> nn.Module:
    """The method ``cfg.method`` names, built by its registered builder; its starting weights come from
    ``init`` or else from ``cfg.init_from`` (an earlier run or an exported artifact)."""
    _validate.choice("method.name", cfg.method.name, tuple(METHODS))
    if init is None and cfg.init_from is not None:
        init = read_weights(resolve_weights(cfg.init_from))
    return METHODS[cfg.method.name](cfg, init)


def resolve_weights(spec) -> Path:
    """The weights file ``spec`` names: ``experiment:NAME/RUN`` (a committed book artifact,
    ``book/results/NAME/RUN.safetensors``), a run folder (its ``checkpoint.pt``), or a file."""
    spec = str(spec)
    if spec.startswith("experiment:"):
        path = RESULTS_DIR / f"{spec.removeprefix('experiment:')}.safetensors"
    else:
        path = Path(spec)
        path = path / "checkpoint.pt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {path} (from {spec!r}); train that run first or fix the path")
    return path


def read_weights(path, ema: bool = True) -> dict:
    """A method's weights from a training checkpoint (its EMA weights unless ``ema=False``, or when it has
    none) or from a ``.safetensors`` export (as float32)."""
    path = Path(path)
    state = load_checkpoint(path)
    if path.suffix == ".safetensors":
        state.pop("__metadata__", None)
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return state["ema"] if ema and "ema" in state else state["method"]


def checkpoint_path(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / "checkpoint.pt"


def make_trainer(cfg: RunConfig, method=None, data=None, resume: bool = False,
                 allow_config_change: bool = False) -> Trainer:
    """A trainer that writes its checkpoint and JSON-lines log under ``cfg.out_dir``. A resumed run
    must have the config its checkpoint was written with (``RESUME_MAY_CHANGE`` aside), else
    ``ConfigMismatchError`` lists the differences, unless ``allow_config_change``."""
    out = Path(cfg.out_dir)
    train_cfg = cfg.train
    train_cfg.checkpoint_path = str(checkpoint_path(cfg))
    train_cfg.log_path = str(out / "log.jsonl")
    if not resume and is_main_process():
        Path(train_cfg.log_path).unlink(missing_ok=True)
    torch.manual_seed(train_cfg.seed)  # the network's initial weights depend on the seed alone
    method = build_method(cfg) if method is None else method
    data = build_data(cfg) if data is None else data
    trainer = Trainer(method, data, train_cfg, resume=checkpoint_path(cfg) if resume else None,
                      metadata={"run_config": to_dict(cfg)})
    if resume:
        stored = trainer.metadata.get("run_config")
        changes = (["the checkpoint records no config"] if stored is None else
                   config_differences(from_dict(RunConfig, stored), cfg, ignore=RESUME_MAY_CHANGE))
        if changes and not allow_config_change:
            raise ConfigMismatchError(
                f"{checkpoint_path(cfg)} was written with another config:\n  " + "\n  ".join(changes)
                + "\nresume with the same config, or pass --allow-config-change (Python: allow_config_change=True)")
        trainer.metadata["run_config"] = to_dict(cfg)
    return trainer


@torch.no_grad()
def sample_in_batches(method, n: int, batch_size: int, *, generator=None, progress: bool = True, **kw):
    """Draw ``n`` samples ``batch_size`` at a time (with a progress bar over batches)."""
    _validate.positive_int("n", n)
    _validate.positive_int("batch_size", batch_size)
    sizes = [min(batch_size, n - i) for i in range(0, n, batch_size)]
    out = [method.sample(b, generator=generator, progress=False, **kw).cpu()
           for b in progress_bar(sizes, desc="sampling batches", enabled=progress and len(sizes) > 1)]
    return torch.cat(out)


def sample_kwargs(cfg: RunConfig) -> dict:
    s = cfg.sample
    return {"sampler": s.sampler, "steps": s.steps, "eta": s.eta, "clip": s.clip}


def save_samples_figure(samples: torch.Tensor, path) -> None:
    """A PNG of samples: an image grid, or a scatter plot for 2D points."""
    import matplotlib.pyplot as plt

    from .viz import save_image_grid, scatter2d

    if samples.ndim == 4:
        save_image_grid(samples, path)
        return
    fig, ax = plt.subplots(figsize=(4, 4))
    scatter2d(ax, samples)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def train_run(cfg: RunConfig, resume: bool = False, allow_config_change: bool = False) -> Trainer:
    """Train as configured; writes checkpoint.pt, log.jsonl, loss.png, samples_<step>.png, config.json."""
    from .viz import plot_history

    out = Path(cfg.out_dir)
    trainer = make_trainer(cfg, resume=resume, allow_config_change=allow_config_change)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    every = cfg.sample.every or cfg.train.steps
    while trainer.step < cfg.train.steps:
        trainer.fit(min(cfg.train.steps, (trainer.step // every + 1) * every))
        if is_main_process():
            g = torch.Generator(trainer.device).manual_seed(0)
            n = cfg.sample.n if cfg.data.name == "toy2d" else min(cfg.sample.n, 64)
            grid = trainer.model.sample(n, generator=g, progress=False, **sample_kwargs(cfg))
            save_samples_figure(grid, out / f"samples_{trainer.step:07d}.png")
    if is_main_process():
        plot_history(trainer.history, out / "loss.png")
    return trainer


def load_trained(cfg: RunConfig, path=None, ema: bool = True) -> nn.Module:
    """The method of ``cfg`` with weights from a training checkpoint (EMA weights by default) or a
    ``.safetensors`` export, in eval mode on ``cfg.train.device``."""
    path = Path(path) if path is not None else checkpoint_path(cfg)
    method = build_method(cfg)
    method.load_state_dict(read_weights(path, ema=ema))
    return method.to(resolve_device(cfg.train.device)).eval()


def export_weights(method: torch.nn.Module, path, *, half: bool = True, metadata: dict | None = None) -> Path:
    """Write a method's weights to ``.safetensors`` (fp16 by default, for small committed artifacts)."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in method.state_dict().items()}
    if metadata:
        state["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    return save_checkpoint(path, state)
