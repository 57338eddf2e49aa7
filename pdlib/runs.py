"""Build a run from a ``RunConfig`` and carry it out: train, sample, evaluate.

The command line (``python -m pdlib``) and the book's experiments both go through these functions, so a
chapter's artifacts come from exactly the code a user runs at paper scale.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import _validate
from .config import RunConfig, to_dict
from .diffusion import GaussianDiffusion
from .methods import DDPM
from .progress import progress_bar
from .schedules import beta_schedule, rescale_zero_terminal_snr
from .train import Trainer, is_main_process, load_checkpoint, save_checkpoint
from .train.trainer import resolve_device

METRICS = ("validity", "sliced_wasserstein", "mmd", "fid", "inception_score")


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

        return digits(size=d.size)[0]
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


def build_method(cfg: RunConfig) -> DDPM:
    return DDPM(build_net(cfg), build_process(cfg), parameterization=cfg.diffusion.parameterization)


def checkpoint_path(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / "checkpoint.pt"


def make_trainer(cfg: RunConfig, method=None, data=None, resume: bool = False) -> Trainer:
    """A trainer that writes its checkpoint and JSON-lines log under ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    train_cfg = cfg.train
    train_cfg.checkpoint_path = str(checkpoint_path(cfg))
    train_cfg.log_path = str(out / "log.jsonl")
    if not resume and is_main_process():
        Path(train_cfg.log_path).unlink(missing_ok=True)
    torch.manual_seed(train_cfg.seed)  # the network's initial weights depend on the seed alone
    method = build_method(cfg) if method is None else method
    data = build_data(cfg) if data is None else data
    return Trainer(method, data, train_cfg, resume=checkpoint_path(cfg) if resume else None)


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


def train_run(cfg: RunConfig, resume: bool = False) -> Trainer:
    """Train as configured; writes checkpoint.pt, log.jsonl, loss.png, samples_<step>.png, config.json."""
    from .viz import plot_history

    out = Path(cfg.out_dir)
    trainer = make_trainer(cfg, resume=resume)
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


def load_trained(cfg: RunConfig, path=None, ema: bool = True) -> DDPM:
    """The method of ``cfg`` with weights from a training checkpoint (EMA weights by default) or a
    ``.safetensors`` export."""
    path = Path(path) if path is not None else checkpoint_path(cfg)
    method = build_method(cfg)
    state = load_checkpoint(path)
    if path.suffix == ".safetensors":
        state.pop("__metadata__", None)
        weights = {k: v.float() for k, v in state.items()}
    else:
        weights = state["ema"] if ema and "ema" in state else state["method"]
    method.load_state_dict(weights)
    return method.to(resolve_device(cfg.train.device)).eval()


def export_weights(method: torch.nn.Module, path, *, half: bool = True, metadata: dict | None = None) -> Path:
    """Write a method's weights to ``.safetensors`` (fp16 by default, for small committed artifacts)."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in method.state_dict().items()}
    if metadata:
        state["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    return save_checkpoint(path, state)


def evaluate(cfg: RunConfig, method, *, n_samples: int | None = None, generator=None,
             progress: bool = True) -> dict:
    """Sample ``n_samples`` (explicit: from the argument or ``eval.n_samples``) and compute
    ``eval.metrics``. Returns ``{"n_samples": ..., metric: value, "sample_seconds": ...}``."""
    n = n_samples or cfg.eval.n_samples
    if n is None:
        raise ValueError("say how many samples to evaluate: --n-samples N or eval.n_samples=N")
    for name in cfg.eval.metrics:
        _validate.choice("eval.metrics item", name, METRICS)
    start = time.perf_counter()
    samples = sample_in_batches(method, n, cfg.sample.batch_size, generator=generator, progress=progress,
                                **sample_kwargs(cfg))
    results = {"n_samples": n, "sample_seconds": time.perf_counter() - start}
    for name in cfg.eval.metrics:
        results[name] = _metric(name, cfg, samples)
    return results


def _metric(name: str, cfg: RunConfig, samples: torch.Tensor):
    from . import metrics
    from .data import shapes_validity, toy2d

    if name == "validity":
        return float(shapes_validity(samples).float().mean())
    if name in ("sliced_wasserstein", "mmd"):
        reference = toy2d(cfg.data.toy_set, len(samples), torch.Generator().manual_seed(cfg.data.seed + 1))
        return getattr(metrics, name)(samples, reference)
    if name == "inception_score":
        return float(metrics.inception_score(samples, weights_path=cfg.eval.fid_weights))
    return float(metrics.fid(_reference_images(cfg), samples, weights_path=cfg.eval.fid_weights))


def _reference_images(cfg: RunConfig):
    """The training images, as a tensor or an iterable of image batches (labels dropped)."""
    data = build_data(cfg)
    if isinstance(data, torch.Tensor):
        return data
    loader = torch.utils.data.DataLoader(data, batch_size=250, num_workers=cfg.train.num_workers)
    return (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in loader)
