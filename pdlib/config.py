"""Run configurations: plain dataclasses read from YAML, strict about unknown keys.

A run is ``data`` -> ``model`` + ``diffusion`` -> ``train`` -> ``sample``/``eval``. Presets live in
``pdlib/configs/*.yaml``; ``python -m pdlib train --config NAME key=value ...`` loads one and applies
dotted overrides such as ``train.steps=100``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import _validate
from .data.images import DIGITS_SPLITS
from .diffusion import PARAMETERIZATIONS, SAMPLERS
from .schedules import SCHEDULES, space_timesteps
from .train.trainer import TrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"
DATASETS = ("toy2d", "shapes", "digits", "cifar10", "celeba", "folder")
MODEL_TYPES = ("unet", "mlp2d", "gan", "autoencoder")


@dataclass
class DataConfig:
    """Which data: a generated set (``toy2d``, ``shapes``), ``digits``, or a set on disk under ``root``."""

    name: str = "shapes"
    toy_set: str = "moons"
    n: int = 20000
    size: int = 16
    root: str | None = None
    hflip: bool = False
    seed: int = 0
    split: str = "all"  # digits only: "all", or the fixed held-out split's "train" / "test" part


@dataclass
class ModelConfig:
    """The network: ``unet`` from a preset (with keyword overrides), ``mlp2d``, ``gan`` (a DDGAN
    ``Generator`` preset; the discriminator is in ``method.kwargs``) or ``autoencoder`` (an ``AutoEncoder``
    preset)."""

    type: str = "unet"
    preset: str | None = "cpu-small"
    kwargs: dict = field(default_factory=dict)


@dataclass
class MethodConfig:
    """The training method: a name in ``pdlib.pipeline.METHODS`` and its constructor's keywords beyond
    the network and the process."""

    name: str = "ddpm"
    kwargs: dict = field(default_factory=dict)


@dataclass
class DiffusionConfig:
    """The process and the training target."""

    schedule: str = "linear"
    T: int = 1000
    parameterization: str = "eps"
    zero_terminal_snr: bool = False


@dataclass
class SampleConfig:
    """How samples are drawn, for grids during training and for ``sample``/``eval``. ``steps`` is
    ``None`` (all ``T`` steps), a count, or a respacing string such as ``"ddim25"``."""

    n: int = 64
    batch_size: int = 256
    sampler: str = "ddim"
    steps: int | str | None = 50
    eta: float = 0.0
    clip: bool = True
    every: int | None = None


@dataclass
class EvalConfig:
    """What ``eval`` measures. ``n_samples`` must be set explicitly (no silent 50k default)."""

    n_samples: int | None = None
    metrics: list[str] = field(default_factory=lambda: ["validity"])
    fid_weights: str | None = None
    stats_dir: str | None = None  # where FID reference statistics are cached (default ~/.cache/pdlib/fid_stats)
    allow_small: bool = False  # FID/IS from fewer samples than they need (smoke tests: numbers mean nothing)


@dataclass
class RunConfig:
    """A whole run. ``out_dir`` receives the checkpoint, the JSON-lines log, plots and sample grids.

    ``init_from`` starts training from earlier weights: a run folder or its ``checkpoint.pt``, an exported
    ``.safetensors`` file, or ``"experiment:NAME/RUN"`` (the book's ``book/results/NAME/RUN.safetensors``);
    ``pdlib.pipeline.resolve_weights`` finds the file.
    """

    name: str = "run"
    out_dir: str = "runs/run"
    init_from: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        validate(self)


def validate(cfg: RunConfig) -> None:
    """Check every section's values, and those that depend on each other (``sample.steps`` on
    ``diffusion.T``); raise ``ValueError`` naming the dotted key and the valid choices."""
    from . import adversarial_runs, latent_runs, metric_runs, pipeline, selfperceptual_runs  # noqa: F401
    # (imported here: they import this module; adversarial_runs registers the ddgan, lddgan and autoencoder
    # methods, latent_runs latent and flow, metric_runs dual and casdm, selfperceptual_runs self-perceptual)
    from .evaluation import METRICS

    d, s, e = cfg.diffusion, cfg.sample, cfg.eval
    _validate.choice("data.name", cfg.data.name, DATASETS)
    _validate.positive_int("data.n", cfg.data.n)
    _validate.positive_int("data.size", cfg.data.size)
    _validate.choice("data.split", cfg.data.split, DIGITS_SPLITS)
    if cfg.data.split != "all" and cfg.data.name != "digits":
        raise ValueError(f"data.split={cfg.data.split!r} applies to data.name='digits' only "
                         f"(got data.name={cfg.data.name!r})")
    _validate.choice("model.type", cfg.model.type, MODEL_TYPES)
    _validate.choice("method.name", cfg.method.name, pipeline.METHODS)
    _validate.choice("diffusion.schedule", d.schedule, SCHEDULES)
    _validate.choice("diffusion.parameterization", d.parameterization, PARAMETERIZATIONS)
    _validate.positive_int("diffusion.T", d.T)
    if d.zero_terminal_snr and d.parameterization == "eps":
        raise ValueError("diffusion.zero_terminal_snr=true needs diffusion.parameterization 'v' or 'x0': "
                         "at zero SNR an eps prediction says nothing about x0")
    _validate.choice("sample.sampler", s.sampler, SAMPLERS)
    if s.steps is not None:
        try:
            space_timesteps(d.T, s.steps)
        except (TypeError, ValueError) as err:
            raise ValueError(f"sample.steps={s.steps!r} does not fit diffusion.T={d.T}: expected null, "
                             f"a count from 1 to T or a respacing such as 'ddim25' ({err})") from None
        if d.zero_terminal_snr and space_timesteps(d.T, s.steps)[-1] != d.T - 1:
            raise ValueError(f"sample.steps={s.steps!r} never visits the last step t = T-1, where a zero-terminal-SNR "
                             "schedule starts from pure noise (Lin et al. 2024): use a count such as 25, which keeps "
                             "the first and last steps")
    _validate.positive_int("sample.n", s.n)
    _validate.positive_int("sample.batch_size", s.batch_size)
    if s.eta < 0:
        raise ValueError(f"sample.eta must be >= 0, got {s.eta}")
    if s.every is not None:
        _validate.positive_int("sample.every", s.every)
    for name in e.metrics:
        _validate.choice("eval.metrics item", name, METRICS)
    if e.n_samples is not None:
        _validate.positive_int("eval.n_samples", e.n_samples)
    if cfg.init_from is not None and not _is_weights_source(cfg.init_from):
        raise ValueError(f"init_from={cfg.init_from!r}: expected a run folder, a checkpoint .pt or "
                         f".safetensors file, or 'experiment:NAME/RUN'")


def _is_weights_source(spec: str) -> bool:
    """Whether ``spec`` reads as ``experiment:NAME/RUN`` or a path (whether it exists is checked when the
    weights are read, as the config may be written on another machine)."""
    if spec.startswith("experiment:"):
        name, _, run = spec.removeprefix("experiment:").partition("/")
        return bool(name and run) and "/" not in run
    return bool(spec.strip())


def _number(value, kind: type):
    """``value`` (a number, or a numeric string such as ``"2e-4"``, which YAML leaves a string) as a
    finite ``kind`` (``int`` or ``float``); ``None`` when it is not one (an int field refuses 2.5)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not math.isfinite(value):
        return None
    if kind is float:
        return float(value)
    return int(value) if float(value).is_integer() else None


def _coerce(key: str, value, tp):
    """``value`` converted to the field annotation ``tp``: numbers and numeric strings to int/float,
    lists to ``list[...]``/``tuple[...]`` items, dicts to nested dataclasses, a union's first member
    that fits (a member ``value`` already is comes first). Raises ``ValueError`` naming ``key``."""
    origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        for member in sorted(args, key=lambda t: not _is_a(value, t)):
            try:
                return _coerce(key, value, member)
            except ValueError:
                pass
    elif dataclasses.is_dataclass(origin):
        if isinstance(value, origin):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            return from_dict(origin, value, f"{key}.")
    elif origin in (list, tuple) and isinstance(value, (list, tuple)):
        if not args:
            return origin(value)
        item_types = args if origin is tuple and Ellipsis not in args else args[:1] * len(value)
        if len(item_types) == len(value):
            return origin(_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, item_types)))
    elif origin in (int, float):
        number = _number(value, origin)
        if number is not None:
            return number
    elif _is_a(value, origin):  # str, bool (not 0/1 or "yes"), dict, None
        return value
    name = str(tp) if args else tp.__name__
    raise ValueError(f"{key}: expected {name}, got {value!r}")


def _is_a(value, tp) -> bool:
    """``isinstance`` for a field annotation, where a bool is not an int or a float."""
    return isinstance(value, typing.get_origin(tp) or tp) and not (isinstance(value, bool) and tp in (int, float))


def from_dict(cls, values: dict, where: str = ""):
    """Build dataclass ``cls`` from a nested dict (YAML, or ``dataclasses.asdict`` output as a checkpoint
    stores it), converting each value to its field's type: ``"2e-4"`` -> 2e-4 for a float, ``[0.9, 0.99]``
    -> a tuple. Unknown keys and values that do not convert raise ``ValueError`` naming the dotted key."""
    if not isinstance(values, dict):
        raise TypeError(f"{where or cls.__name__} must be a mapping, got {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                         f"valid keys of {where.rstrip('.') or 'the config'}: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(where + name, value, hints[name]) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        if not where:
            raise
        raise ValueError(f"{where.rstrip('.')}: {err}") from None


def to_dict(config) -> dict:
    """The config as plain nested dicts and lists (what YAML and JSON files store)."""
    return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config)))


def config_differences(a: RunConfig, b: RunConfig,
                       ignore=("out_dir", "train.progress", "train.checkpoint_path", "train.log_path")) -> list[str]:
    """One line ``"train.lr: 0.001 -> 0.0002"`` per leaf (nested dicts as dotted keys, sorted) where ``a`` and
    ``b`` differ, skipping the keys in ``ignore`` and everything under them. A resume whose config differs from
    the checkpoint's stops on these."""
    flat_a, flat_b = _flatten(to_dict(a)), _flatten(to_dict(b))
    lines = []
    for key in sorted(flat_a.keys() | flat_b.keys()):
        old, new = (repr(flat[key]) if key in flat else "(unset)" for flat in (flat_a, flat_b))
        if old != new and not any(key == i or key.startswith(f"{i}.") for i in ignore):
            lines.append(f"{key}: {old} -> {new}")
    return lines


def _flatten(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict with dotted keys: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def parse_override(text: str) -> tuple[list[str], object]:
    """``"train.steps=100"`` -> (["train", "steps"], 100); the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. train.steps=100)")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set each ``"a.b=value"`` of ``overrides`` in the nested dict ``values`` (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {text!r}: {key} is not a section")
        node[path[-1]] = value
    return values


def preset_names() -> list[str]:
    """The names of the YAML presets in ``pdlib/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str, overrides: list[str] = ()) -> RunConfig:
    """Read a preset name (see ``preset_names()``) or a YAML file, apply ``key=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown config {name_or_path!r}; presets: {', '.join(preset_names())}")
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    values = apply_overrides(values, list(overrides))
    values.setdefault("out_dir", f"runs/{values.get('name', path.stem)}")
    return from_dict(RunConfig, values)
