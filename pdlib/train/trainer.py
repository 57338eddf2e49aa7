"""A step-based trainer for every method: phases, several optimisers, EMA, autocast, checkpoints.

It trains any ``method`` with ``method.loss(x0, generator=..., **cond) -> {"loss": ..., ...}``, or, for
methods with several networks and optimisers (a GAN's discriminator and generator steps, lazy
regularisation), the phases the method declares (see ``pdlib.train.plan``). All randomness (minibatch
choice, timesteps, noise, dropout) comes from states the checkpoint stores, one set per process, so a
resumed run continues exactly as an uninterrupted one would on the CPU, also under ``torchrun``.

Safety: a step whose loss or gradient is not finite is refused before anything is updated; a
checkpoint is written atomically, read back before it replaces the previous one (kept as ``.prev``),
and never holds non-finite weights; SIGTERM (preemption) writes a checkpoint at the next step boundary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .. import __version__, _validate
from ..errors import CheckpointError, NonFiniteLossError, TrainingPreempted
from ..progress import progress_bar
from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA
from .plan import parameters_of, training_plan


@dataclass
class TrainConfig:
    """Training settings; every field is a plain value so the config can be saved and compared.

    ``batch_size`` is per process and per micro-batch: the global batch of one optimiser step is
    ``batch_size x processes x grad_accum`` (written at the top of the log)."""

    steps: int = 1000
    batch_size: int = 256
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.999
    ema_warmup: bool = True
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
        _validate.positive_int("grad_accum", self.grad_accum)
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
    """Trains ``method`` on ``data`` for ``config.steps`` steps.

    ``data`` is a tensor of examples, a tuple ``(x, y)`` of examples and labels (passed as ``y=``),
    a function ``(batch_size, generator) -> x or (x, y)`` that draws a fresh batch, or a
    ``torch.utils.data.Dataset`` of ``x`` or ``(x, y)`` items (read through a shuffling DataLoader whose
    workers persist across epochs; its labels are passed only with ``dataset_labels=True``).
    Resuming is exact for the first three; for a Dataset the shuffling restarts.

    One step draws ``grad_accum`` micro-batches, then runs each of the method's phases that is due
    (``pdlib.train.plan``): its loss on every micro-batch, back-propagation, a check that the loss
    terms and the gradient norm are finite, clipping, and its optimiser's step; then the EMA is updated.
    ``history`` holds one dict of averaged loss terms every ``log_every`` steps (also appended as a JSON
    line to ``log_path``). Call ``fit()``; ``save``/``load`` (or ``resume=path``) checkpoint the whole
    state, with ``metadata`` (any plain dict, e.g. the run's config) stored beside it. On an exception
    the trainer writes a checkpoint first when ``checkpoint_path`` is set and the state lies on a step
    boundary, so no work is lost. Under ``torchrun`` the method is wrapped in DistributedDataParallel,
    each process draws its own batches and noise, and only rank 0 writes files.
    """

    def __init__(self, method: nn.Module, data, config: TrainConfig | None = None, *,
                 resume: str | Path | None = None, metadata: dict | None = None, **overrides):
        self.config = dataclasses.replace(config or TrainConfig(), **overrides)
        cfg = self.config
        if cfg.checkpoint_every is not None and cfg.checkpoint_path is None:
            raise ValueError("checkpoint_every needs checkpoint_path")
        self.plan = training_plan(method)
        self.device = distributed.local_device(resolve_device(cfg.device))
        distributed.init_distributed(self.device)
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if cfg.channels_last:
            method = method.to(memory_format=torch.channels_last)
        self.method = method.to(self.device)
        self.loss_module = distributed.wrap_for_training(self.method, self.device, len(self.plan.phases) > 1)
        if cfg.compile:
            self.loss_module = torch.compile(self.loss_module)
        self.data = data
        self._loader_iter = None
        self._params = {spec.name: parameters_of(method, spec.networks) for spec in self.plan.optimizers}
        self._check_parameter_cover()
        self.optimizers = {
            spec.name: torch.optim.AdamW(
                self._params[spec.name], lr=cfg.lr if spec.lr is None else spec.lr,
                betas=tuple(cfg.adam_betas if spec.betas is None else spec.betas),
                weight_decay=cfg.weight_decay if spec.weight_decay is None else spec.weight_decay)
            for spec in self.plan.optimizers}
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]
        self.ema = EMA(method, cfg.ema_decay, self.plan.ema_networks, cfg.ema_warmup) if cfg.ema_decay is not None else None
        torch.manual_seed(cfg.seed + self.rank)  # dropout draws from the global generator
        self.data_generator = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank)
        self.loss_generator = torch.Generator(self.device).manual_seed(cfg.seed + 1000 * self.rank + 1)
        self.metadata = dict(metadata or {})
        self.step = 0
        self.history: list[dict] = []
        self._running: dict[str, list] = {}  # key -> [sum, count] of the loss terms since the last record
        self.wall_time = 0.0
        self._at_boundary = True  # False while a step has updated some weights but not all
        self._sigterm = False
        self._saved = None  # (path, step) of the last checkpoint this trainer wrote
        if resume is not None:
            self.load(resume)

    @property
    def global_batch(self) -> int:
        """Examples behind one optimiser step: per-process batch x processes x accumulation."""
        return self.config.batch_size * self.world_size * self.config.grad_accum

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of a single-optimiser method (see ``optimizers`` for the others)."""
        if len(self.optimizers) != 1:
            raise AttributeError(f"this method has several optimisers: {sorted(self.optimizers)}")
        return next(iter(self.optimizers.values()))

    def _check_parameter_cover(self) -> None:
        owners: dict[int, str] = {}
        for name, params in self._params.items():
            for p in params:
                if id(p) in owners:
                    raise ValueError(f"a parameter is in two optimisers: {owners[id(p)]!r} and {name!r}")
                owners[id(p)] = name
        trainable = {id(p): n for n, p in self.method.named_parameters() if p.requires_grad}
        if not trainable:
            raise ValueError("the method has no trainable parameters")
        left = [n for i, n in trainable.items() if i not in owners]
        if left:
            raise ValueError(f"trainable parameters in no optimiser (freeze them with pdlib.train.Frozen, or "
                             f"add their network to an OptimizerSpec): {left[:5]}")

    # ------------------------------------------------------------------ data
    def _next_from_dataset(self):
        if self._loader_iter is None:
            if self.world_size > 1:
                sampler = DistributedSampler(self.data, seed=self.config.seed, drop_last=True)
            else:
                sampler = torch.utils.data.RandomSampler(self.data, generator=self.data_generator)
            workers = self.config.num_workers
            loader = DataLoader(self.data, batch_size=self.config.batch_size, sampler=sampler, drop_last=True,
                                num_workers=workers, persistent_workers=workers > 0,
                                pin_memory=self.device.type == "cuda")

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

    def _warmup(self) -> float:
        w = self.config.warmup_steps
        return min(1.0, (self.step + 1) / w) if w else 1.0

    # -------------------------------------------------------------- training
    def train_step(self) -> dict:
        """One step: every due phase on the same micro-batches; returns the loss terms as floats
        (prefixed ``PHASE/`` when the method has several phases)."""
        self.method.train()
        batches = [self._batch() for _ in range(self.config.grad_accum)]
        terms = {}
        for phase in self.plan.phases:
            if phase.due(self.step):
                prefix = "" if self.plan.single else f"{phase.name}/"
                terms.update({prefix + k: v for k, v in self._run_phase(phase, batches).items()})
        if self.ema is not None:
            self.ema.update(self.method, self.step)
        self.step += 1
        self._at_boundary = True
        return terms

    def _run_phase(self, phase, batches) -> dict:
        cfg = self.config
        opt, params = self.optimizers[phase.optimizer], self._params[phase.optimizer]
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * self._warmup()
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        n = len(batches)
        ddp = isinstance(self.loss_module, nn.parallel.DistributedDataParallel)
        for i, (x, cond) in enumerate(batches):
            sync = self.loss_module.no_sync() if ddp and i < n - 1 else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                    out = self.loss_module(x, phase=phase.name, step=self.step, progress=self.step / cfg.steps,
                                           generator=self.loss_generator, **cond)
                values = {k: float(v.detach()) for k, v in out.items()}
                self._refuse_non_finite(phase, values)
                (out["loss"] / n).backward()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v / n
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf))
        self._refuse_non_finite(phase, {"gradient norm": norm})
        opt.step()
        self._at_boundary = False
        if cfg.grad_clip is not None:
            sums["grad_norm" if self.plan.single else f"grad_norm_{phase.optimizer}"] = norm
        return sums

    def _refuse_non_finite(self, phase, values: dict) -> None:
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            where = f"phase {phase.name!r}, " if not self.plan.single else ""
            raise NonFiniteLossError(
                f"step {self.step + 1}: {where}{', '.join(f'{k} = {v}' for k, v in bad.items())}. The step was "
                f"refused: the weights, optimiser and EMA are those after step {self.step}"
                + (f", and {self.config.checkpoint_path} keeps the last good state" if self.config.checkpoint_path
                   else "") + ". Lower the learning rate, clip gradients or check the data.")

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` (default ``config.steps``) steps are done in total."""
        cfg = self.config
        target = cfg.steps if steps is None else steps
        bar = progress_bar(total=max(0, target - self.step), desc="training", enabled=cfg.progress)
        start = time.perf_counter()
        self._write_log_header()
        previous_handler = self._catch_sigterm()
        try:
            while self.step < target:
                if distributed.any_rank(self._sigterm, self.device):
                    raise TrainingPreempted(f"stopped by SIGTERM after step {self.step}")
                for k, v in self.train_step().items():
                    total = self._running.setdefault(k, [0.0, 0])
                    total[0] += v
                    total[1] += 1
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    record = {"step": self.step, **{k: s / c for k, (s, c) in self._running.items()}}
                    self.history.append(record)
                    self._write_log(record)
                    if "loss" in record:
                        bar.set_postfix(loss=f"{record['loss']:.4f}")
                    self._running = {}
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save(cfg.checkpoint_path)
        except TrainingPreempted:
            if cfg.checkpoint_path is not None:
                self.save(cfg.checkpoint_path)
            raise
        except BaseException:
            if cfg.checkpoint_path is not None and self.step > 0 and self._at_boundary \
                    and distributed.is_main_process():
                # no collective here: the other processes may be gone; they resume from rank 0's streams
                save_checkpoint(cfg.checkpoint_path, self.state_dict(gather=False), keep_previous=True)
            raise
        finally:
            self.wall_time += time.perf_counter() - start
            bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        if cfg.checkpoint_path is not None and self._saved != (str(cfg.checkpoint_path), self.step):
            self.save(cfg.checkpoint_path)
        return self.history

    def _catch_sigterm(self):
        """On SIGTERM, ask the loop to stop at the next step boundary; returns the previous handler."""
        if threading.current_thread() is not threading.main_thread():
            return None
        self._sigterm = False

        def handler(signum, frame):
            self._sigterm = True

        return signal.signal(signal.SIGTERM, handler)

    # ------------------------------------------------------------------ log
    def _write_log(self, record: dict) -> None:
        if self.config.log_path is not None and distributed.is_main_process():
            with open(self.config.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _log_header(self) -> dict:
        return {"event": "start", "global_batch": self.global_batch, "batch_size": self.config.batch_size,
                "processes": self.world_size, "grad_accum": self.config.grad_accum}

    def _write_log_header(self) -> None:
        path = self.config.log_path
        if path is not None and distributed.is_main_process():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            if not Path(path).is_file() or Path(path).stat().st_size == 0:
                self._write_log(self._log_header())

    def _rewrite_log(self) -> None:
        """After a resume the log is the checkpoint's history: lines written after it are dropped."""
        path = self.config.log_path
        if path is not None and distributed.is_main_process():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lines = [self._log_header(), *self.history]
            Path(path).write_text("".join(json.dumps(r) + "\n" for r in lines))

    @property
    def model(self) -> nn.Module:
        """The model to sample from: the EMA copy when EMA is on, else the trained method."""
        return self.ema.module if self.ema is not None else self.method

    # ----------------------------------------------------------- checkpoints
    def _rng_state(self) -> dict:
        rng = {"data": self.data_generator.get_state(), "loss": self.loss_generator.get_state(),
               "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng

    def state_dict(self, gather: bool = True) -> dict:
        """The whole training state. ``rng`` holds every process's random streams (a collective call
        under torchrun; ``gather=False`` stores this process's only)."""
        state = {
            "method": self.method.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "step": self.step,
            "history": self.history,
            "running": self._running,
            "wall_time": self.wall_time,
            "config": dataclasses.asdict(self.config),
            "metadata": self.metadata,
            "pdlib_version": __version__,
            "rng": distributed.all_gather(self._rng_state()) if gather else [self._rng_state()],
        }
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def save(self, path) -> Path | None:
        """Write the whole training state atomically (on rank 0 only; returns None elsewhere). The
        previous file is kept as ``PATH.prev``, and a state with non-finite weights is refused."""
        state = self.state_dict()
        written = None
        if distributed.is_main_process():
            for key in ("method", "ema"):
                bad = [k for k, v in state.get(key, {}).items() if v.is_floating_point() and not v.isfinite().all()]
                if bad:
                    raise CheckpointError(f"refusing to replace {path} with non-finite {key} weights ({bad[:3]})")
            written = save_checkpoint(path, state, keep_previous=True)
        distributed.barrier()
        self._saved = (str(path), self.step)
        return written

    def load(self, path) -> None:
        """Restore a state written by ``save``; training then continues exactly where it stopped."""
        state = load_checkpoint(path, map_location=self.device)
        self.method.load_state_dict(state["method"])
        if set(state["optimizers"]) != set(self.optimizers):
            raise ValueError(f"{path} has optimisers {sorted(state['optimizers'])}, this method "
                                  f"{sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        if self.ema is not None:
            if "ema" not in state:
                raise ValueError(f"{path} has no EMA weights but this trainer uses EMA")
            self.ema.module.load_state_dict(state["ema"])
        self.step, self.history = int(state["step"]), list(state["history"])
        self._running = {k: list(v) for k, v in state["running"].items()}
        self.wall_time = float(state.get("wall_time", 0.0))
        self.metadata = dict(state.get("metadata", {}))
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            self._set_rng_state(rngs[self.rank])
        else:
            warnings.warn(f"{path} holds the random streams of {len(rngs)} process(es), this run has "
                          f"{self.world_size}: the streams restart from the seed (the run goes on, not "
                          f"bit-identically)")
            if self.rank < len(rngs):
                self._set_rng_state(rngs[self.rank])
        self._rewrite_log()

    def _set_rng_state(self, rng: dict) -> None:
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
