"""A step-based trainer: minibatches, optimiser, gradient clipping, EMA, autocast, checkpoints.

It trains any ``method`` with ``method.loss(x0, generator=..., **cond) -> {"loss": ..., ...}``. All
randomness (minibatch choice, timesteps, noise, dropout) comes from states the checkpoint stores, so a
resumed run continues exactly as an uninterrupted one would on the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .. import __version__, _validate
from ..progress import progress_bar
from . import distributed
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
    log_path: str | None = None
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 0
    dataset_labels: bool = False
    progress: bool = True

    def __post_init__(self):
        _validate.positive_int("steps", self.steps)
        _validate.positive_int("batch_size", self.batch_size)
        _validate.positive_int("log_every", self.log_every)
        _validate.choice("amp", self.amp, (None, "bf16"))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.checkpoint_every is not None:
            _validate.positive_int("checkpoint_every", self.checkpoint_every)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` means CUDA when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Trains ``method`` on ``data`` for ``config.steps`` optimiser steps.

    ``data`` is a tensor of examples, a tuple ``(x, y)`` of examples and labels (passed as ``y=``),
    a function ``(batch_size, generator) -> x or (x, y)`` that draws a fresh batch, or a
    ``torch.utils.data.Dataset`` of ``x`` or ``(x, y)`` items (read through a shuffling DataLoader; its
    labels are passed only with ``dataset_labels=True``).
    Resuming is exact for the first three; for a Dataset the shuffling restarts. ``history`` holds one
    dict of averaged loss terms every ``log_every`` steps (also appended as a JSON line to
    ``log_path``). Call ``fit()``; ``save``/``load`` (or ``resume=path``) checkpoint the whole state.
    On an exception the trainer writes a checkpoint first when ``checkpoint_path`` is set, so no work
    is lost. Under ``torchrun`` the method is wrapped in DistributedDataParallel, each process draws
    its own batches, and only rank 0 writes files.
    """

    def __init__(self, method: nn.Module, data, config: TrainConfig | None = None, *,
                 resume: str | Path | None = None, **overrides):
        self.config = dataclasses.replace(config or TrainConfig(), **overrides)
        cfg = self.config
        if cfg.checkpoint_every is not None and cfg.checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        self.device = distributed.local_device(resolve_device(cfg.device))
        distributed.init_distributed(self.device)
        rank = distributed.rank()
        if cfg.channels_last:
            method = method.to(memory_format=torch.channels_last)
        self.method = method.to(self.device)
        self.loss_module = distributed.wrap_for_training(self.method, self.device)
        if cfg.compile:
            self.loss_module = torch.compile(self.loss_module)
        self.data = data
        self._loader_iter = None
        params = [p for p in method.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the method has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.adam_betas),
                                           weight_decay=cfg.weight_decay)
        self.ema = EMA(method, cfg.ema_decay) if cfg.ema_decay is not None else None
        torch.manual_seed(cfg.seed + rank)  # dropout draws from the global generator
        self.data_generator = torch.Generator().manual_seed(cfg.seed + 1000 * rank)
        self.loss_generator = torch.Generator(self.device).manual_seed(cfg.seed + 1000 * rank + 1)
        self.step = 0
        self.history: list[dict] = []
        self._running: dict[str, float] = {}  # sums of the loss terms since the last log record
        self._running_count = 0
        self.wall_time = 0.0
        if resume is not None:
            self.load(resume)

    # ------------------------------------------------------------------ data
    def _next_from_dataset(self):
        if self._loader_iter is None:
            if distributed.world_size() > 1:
                sampler = DistributedSampler(self.data, seed=self.config.seed, drop_last=True)
            else:
                sampler = torch.utils.data.RandomSampler(self.data, generator=self.data_generator)
            loader = DataLoader(self.data, batch_size=self.config.batch_size, sampler=sampler, drop_last=True,
                                num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda")

            def forever():
                epoch = 0
                while True:
                    if isinstance(sampler, DistributedSampler):
                        sampler.set_epoch(epoch)
                    yield from loader
                    epoch += 1

            self._loader_iter = forever()
        return next(self._loader_iter)

    def _batch(self):
        cfg, data = self.config, self.data
        if isinstance(data, Dataset):
            batch = self._next_from_dataset()
            if isinstance(batch, (tuple, list)) and not cfg.dataset_labels:
                batch = batch[0]
        elif callable(data) and not isinstance(data, torch.Tensor):
            batch = data(cfg.batch_size, self.data_generator)
        else:
            tensors = data if isinstance(data, (tuple, list)) else (data,)
            idx = torch.randint(0, len(tensors[0]), (cfg.batch_size,), generator=self.data_generator)
            batch = tuple(x[idx] for x in tensors)
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        x = batch[0].to(self.device, non_blocking=True)
        if cfg.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
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
            terms = self.loss_module(x, generator=self.loss_generator, **cond)
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
        bar = progress_bar(total=max(0, target - self.step), desc="training", enabled=cfg.progress)
        start = time.perf_counter()
        try:
            while self.step < target:
                for k, v in self.train_step().items():
                    self._running[k] = self._running.get(k, 0.0) + v
                self._running_count += 1
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    n = self._running_count
                    record = {"step": self.step, **{k: v / n for k, v in self._running.items()}}
                    self.history.append(record)
                    self._write_log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                    self._running, self._running_count = {}, 0
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save(cfg.checkpoint_path)
        except BaseException:
            if cfg.checkpoint_path is not None and self.step > 0 and distributed.is_main_process():
                save_checkpoint(cfg.checkpoint_path, self.state_dict())  # no barrier: peers may be gone
            raise
        finally:
            self.wall_time += time.perf_counter() - start
            bar.close()
        if cfg.checkpoint_path is not None:
            self.save(cfg.checkpoint_path)
        return self.history

    def _write_log(self, record: dict) -> None:
        if self.config.log_path is not None and distributed.is_main_process():
            path = Path(self.config.log_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")

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
            "running": {"sums": self._running, "count": self._running_count},
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

    def save(self, path) -> Path | None:
        """Write the whole training state atomically (on rank 0 only; returns None elsewhere)."""
        written = save_checkpoint(path, self.state_dict()) if distributed.is_main_process() else None
        distributed.barrier()
        return written

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
        self._running = dict(state["running"]["sums"])
        self._running_count = int(state["running"]["count"])
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
