"""A step-based trainer: minibatches, optimiser, gradient clipping, EMA, autocast, checkpoints.

It trains any ``method`` with ``method.loss(x0, generator=..., **cond) -> {"loss": ..., ...}``. All
randomness (minibatch choice, timesteps, noise, dropout) comes from states the checkpoint stores, so a
resumed run continues exactly as an uninterrupted one would on the CPU.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__, _validate
from ..progress import progress_bar
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA


@dataclass
class TrainConfig:
    """Training settings; every field is a plain value so the config can be saved and compared."""

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    amp: str | None = None
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    checkpoint_every: int | None = None
    checkpoint_path: str | None = None
    progress: bool = True

    def __post_init__(self):
        _validate.positive_int("steps", self.steps)
        _validate.positive_int("batch_size", self.batch_size)
        _validate.positive_int("log_every", self.log_every)
        _validate.choice("amp", self.amp, (None, "bf16"))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.checkpoint_every is not None and self.checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` means CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Trains ``method`` on ``data`` for ``config.steps`` optimiser steps.

    ``data`` is a tensor of examples, a tuple ``(x, y)`` of examples and labels (passed as ``y=``),
    or a function ``(batch_size, generator) -> x or (x, y)`` that draws a fresh batch. ``history`` holds
    one dict of averaged loss terms every ``log_every`` steps. Call ``fit()``; ``save``/``load`` (or
    ``resume=path``) checkpoint the whole state. On an exception the trainer writes a checkpoint
    first when ``checkpoint_path`` is set, so no work is lost.
    """

    def __init__(self, method: nn.Module, data, config: TrainConfig | None = None, *,
                 resume: str | Path | None = None, **overrides):
        self.config = dataclasses.replace(config or TrainConfig(), **overrides)
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.method = method.to(self.device)
        self.data = data
        params = [p for p in method.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the method has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                           weight_decay=cfg.weight_decay)
        self.ema = EMA(method, cfg.ema_decay) if cfg.ema_decay is not None else None
        torch.manual_seed(cfg.seed)  # dropout and initialisers draw from the global generator
        self.data_generator = torch.Generator().manual_seed(cfg.seed)
        self.loss_generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        self.step = 0
        self.history: list[dict] = []
        self.wall_time = 0.0
        if resume is not None:
            self.load(resume)

    # ------------------------------------------------------------------ data
    def _batch(self):
        cfg, data = self.config, self.data
        if callable(data) and not isinstance(data, torch.Tensor):
            batch = data(cfg.batch_size, self.data_generator)
        else:
            tensors = data if isinstance(data, (tuple, list)) else (data,)
            idx = torch.randint(0, len(tensors[0]), (cfg.batch_size,), generator=self.data_generator)
            batch = tuple(x[idx] for x in tensors)
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        x = batch[0].to(self.device, non_blocking=True)
        cond = {"y": batch[1].to(self.device)} if len(batch) > 1 else {}
        return x, cond

    def _lr(self) -> float:
        cfg = self.config
        return cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr

    # -------------------------------------------------------------- training
    def train_step(self) -> dict:
        """One optimiser step; returns the loss terms as floats."""
        cfg = self.config
        self.method.train()
        x, cond = self._batch()
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
            terms = self.method.loss(x, generator=self.loss_generator, **cond)
        loss = terms["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.method.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.method)
        self.step += 1
        return {k: float(v.detach()) for k, v in terms.items()}

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` (default ``config.steps``) optimiser steps are done in total."""
        cfg = self.config
        target = cfg.steps if steps is None else steps
        running: dict[str, float] = {}
        bar = progress_bar(total=max(0, target - self.step), desc="training", enabled=cfg.progress)
        start = time.perf_counter()
        try:
            while self.step < target:
                for k, v in self.train_step().items():
                    running[k] = running.get(k, 0.0) + v
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    record = {"step": self.step, **{k: v / cfg.log_every for k, v in running.items()}}
                    self.history.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                    running = {}
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save(cfg.checkpoint_path)
        except BaseException:
            if cfg.checkpoint_path is not None and self.step > 0:
                self.save(cfg.checkpoint_path)
            raise
        finally:
            self.wall_time += time.perf_counter() - start
            bar.close()
        if cfg.checkpoint_path is not None:
            self.save(cfg.checkpoint_path)
        return self.history

    @property
    def model(self) -> nn.Module:
        """The model to sample from: the EMA copy when EMA is on, else the trained method."""
        return self.ema.module if self.ema is not None else self.method

    # ----------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        state = {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "history": self.history,
            "wall_time": self.wall_time,
            "config": dataclasses.asdict(self.config),
            "pdlib_version": __version__,
            "rng": {"data": self.data_generator.get_state(), "loss": self.loss_generator.get_state(),
                    "torch": torch.get_rng_state()},
        }
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        if torch.cuda.is_available():
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def save(self, path) -> Path:
        """Write the whole training state atomically."""
        return save_checkpoint(path, self.state_dict())

    def load(self, path) -> None:
        """Restore a state written by ``save``; training then continues exactly where it stopped."""
        state = load_checkpoint(path, map_location=self.device)
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if "ema" not in state:
                raise ValueError(f"{path} has no EMA weights but this trainer uses EMA")
            self.ema.module.load_state_dict(state["ema"])
        self.step, self.history = int(state["step"]), list(state["history"])
        self.wall_time = float(state.get("wall_time", 0.0))
        rng = state["rng"]
        self.data_generator.set_state(rng["data"].cpu())
        self.loss_generator.set_state(rng["loss"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def train(method: nn.Module, data, **config) -> Trainer:
    """Build a ``Trainer`` with ``TrainConfig(**config)``, run ``fit()`` and return the trainer."""
    trainer = Trainer(method, data, TrainConfig(**config))
    trainer.fit()
    return trainer


__all__ = ["TrainConfig", "Trainer", "resolve_device", "train"]
