"""Run configurations: plain dataclasses read from YAML, strict about unknown keys.

A run is ``data`` -> ``model`` + ``diffusion`` -> ``train`` -> ``sample``/``eval``. Presets live in
``pdlib/configs/*.yaml``; ``python -m pdlib train --config NAME key=value ...`` loads one and applies
dotted overrides such as ``train.steps=100``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import _validate
from .train.trainer import TrainConfig

CONFIG_DIR = Path(__file__).parent / "configs"
DATASETS = ("toy2d", "shapes", "digits", "cifar10", "celeba", "folder")


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

    def __post_init__(self):
        _validate.choice("data.name", self.name, DATASETS)


@dataclass
class ModelConfig:
    """The network: ``unet`` from a preset (with keyword overrides) or ``mlp2d``."""

    type: str = "unet"
    preset: str | None = "cpu-small"
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        _validate.choice("model.type", self.type, ("unet", "mlp2d"))


@dataclass
class DiffusionConfig:
    """The process and the training target."""

    schedule: str = "linear"
    T: int = 1000
    parameterization: str = "eps"
    zero_terminal_snr: bool = False


@dataclass
class SampleConfig:
    """How samples are drawn, for grids during training and for ``sample``/``eval``."""

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
    metrics: list = field(default_factory=lambda: ["validity"])
    fid_weights: str | None = None


@dataclass
class RunConfig:
    """A whole run. ``out_dir`` receives the checkpoint, the JSON-lines log, plots and sample grids."""

    name: str = "run"
    out_dir: str = "runs/run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def from_dict(cls, values: dict, where: str = ""):
    """Build dataclass ``cls`` from a nested dict; unknown keys raise ``ValueError`` naming them."""
    if not isinstance(values, dict):
        raise TypeError(f"{where or cls.__name__} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                         f"valid keys of {where.rstrip('.') or 'the config'}: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = from_dict(type(default), value, f"{where}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


def to_dict(config) -> dict:
    """The config as plain nested dicts and lists (what YAML and JSON files store)."""
    return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config)))


def parse_override(text: str) -> tuple[list[str], object]:
    """``"train.steps=100"`` -> (["train", "steps"], 100); the value is parsed as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value (e.g. train.steps=100)")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def apply_overrides(values: dict, overrides: list[str]) -> dict:
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
