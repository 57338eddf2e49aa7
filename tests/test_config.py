"""Run configs: values take their fields' types, every section is checked at load time with the valid
choices in the message, and two configs can be compared key by key."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import pytest

from pdlib import pipeline, schedules
from pdlib.config import (MethodConfig, RunConfig, apply_overrides, config_differences, from_dict, load_config,
                          parse_override, preset_names, to_dict)
from pdlib.evaluation import METRICS


def toy(*overrides):
    return load_config("toy2d-ddpm", list(overrides))


# ------------------------------------------------------------------ types
def test_command_line_values_take_the_field_types():
    cfg = toy("train.lr=2e-4", "train.grad_clip=1", "train.steps=3.0", "data.n=1e4", "train.adam_betas=[0.5, 0.9]",
              "train.amp=null", "train.compile=yes", "eval.n_samples=100")
    assert cfg.train.lr == 2e-4 and type(cfg.train.lr) is float  # YAML reads 2e-4 as a string
    assert cfg.train.grad_clip == 1.0 and type(cfg.train.grad_clip) is float
    assert cfg.train.steps == 3 and type(cfg.train.steps) is int
    assert cfg.data.n == 10000 and type(cfg.data.n) is int
    assert cfg.train.adam_betas == (0.5, 0.9)
    assert cfg.train.amp is None and cfg.train.compile is True and cfg.eval.n_samples == 100


def test_sample_steps_keeps_ints_and_respacing_strings():
    assert toy("sample.steps=25").sample.steps == 25
    assert toy("sample.steps=25.0").sample.steps == 25
    assert toy("sample.steps=ddim25").sample.steps == "ddim25"
    assert toy("sample.steps=10,20").sample.steps == "10,20"
    assert toy("sample.steps=null").sample.steps is None


@pytest.mark.parametrize("override, message", [
    ("train.lr=fast", "train.lr: expected float, got 'fast'"),
    ("train.steps=2.5", "train.steps: expected int, got 2.5"),
    ("train.steps=true", "train.steps: expected int, got True"),
    ("train.compile=1", "train.compile: expected bool, got 1"),
    ("train.compile=maybe", "train.compile: expected bool, got 'maybe'"),
    ("data.root=3", "data.root: expected str | None, got 3"),
    ("sample.steps=2.5", "sample.steps: expected int | str | None, got 2.5"),
    ("eval.metrics=fid", "eval.metrics: expected list[str], got 'fid'"),
    ("eval.metrics=[fid, 3]", "eval.metrics[1]: expected str, got 3"),
    ("train=5", "train: expected TrainConfig, got 5"),
])
def test_values_that_do_not_convert_name_key_type_and_value(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        toy(override)


@dataclass
class Example:
    betas: tuple[float, float] = (0.9, 0.99)
    sizes: tuple[int, ...] = ()
    ratio: float | None = None
    names: list[str] = field(default_factory=list)


def test_from_dict_converts_any_dataclass_by_its_annotations():
    ex = from_dict(Example, {"betas": [1, "2e-1"], "sizes": [1, 2.0, 3], "ratio": 2, "names": ("a",)})
    assert ex == Example((1.0, 0.2), (1, 2, 3), 2.0, ["a"])
    assert type(ex.betas[0]) is float and type(ex.sizes[1]) is int
    with pytest.raises(ValueError, match=r"betas: expected tuple\[float, float\], got \[1, 2, 3\]"):
        from_dict(Example, {"betas": [1, 2, 3]})


def test_from_dict_converts_python_values_and_checkpoint_dicts():
    cfg = from_dict(RunConfig, {"train": {"lr": "3e-4", "steps": 10.0}, "sample": {"steps": 20}})
    assert (cfg.train.lr, cfg.train.steps) == (3e-4, 10)
    stored = dataclasses.asdict(toy("train.adam_betas=[0.5, 0.9]", "model.kwargs={hidden: 32}"))
    stored["train"]["adam_betas"] = list(stored["train"]["adam_betas"])  # as a JSON or YAML copy has it
    again = from_dict(RunConfig, stored)
    assert again == toy("train.adam_betas=[0.5, 0.9]", "model.kwargs={hidden: 32}")
    assert again.train.adam_betas == (0.5, 0.9)
    assert from_dict(RunConfig, {"train": again.train}).train == again.train  # a section given as a dataclass


# ------------------------------------------------------------------ presets and strictness
@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name):
    cfg = load_config(name)
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    assert config_differences(cfg, from_dict(RunConfig, to_dict(cfg))) == []


def test_unknown_keys_stay_errors():
    with pytest.raises(ValueError, match="method.nmae.*valid keys of method: kwargs, name"):
        toy("method.nmae=ddpm")
    with pytest.raises(ValueError, match="unknown config key"):
        from_dict(RunConfig, {"traim": {}})


def test_overrides_parse_as_yaml():
    assert parse_override("model.kwargs={hidden: 32}") == (["model", "kwargs"], {"hidden": 32})
    assert apply_overrides({"train": {"lr": 1}}, ["train.lr=0.5", "name=x"]) == {"train": {"lr": 0.5}, "name": "x"}


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("override, message", [
    ("data.name=imagenet", "data.name='imagenet' is not valid; expected one of .*'cifar10'"),
    ("data.size=0", "data.size must be >= 1"),
    ("model.type=transformer", "model.type=.*'mlp2d'"),
    ("diffusion.schedule=sigmoid", "diffusion.schedule=.*" + ".*".join(map(repr, schedules.SCHEDULES))),
    ("diffusion.parameterization=score", "diffusion.parameterization=.*'eps', 'x0', 'v'"),
    ("diffusion.T=0", "diffusion.T must be >= 1"),
    ("diffusion.zero_terminal_snr=true", "diffusion.zero_terminal_snr.*'v' or 'x0'"),
    ("sample.sampler=euler", "sample.sampler=.*'ddpm', 'ddim'"),
    ("sample.steps=0", "sample.steps=0 does not fit diffusion.T=100"),
    ("sample.steps=101", "sample.steps=101 does not fit diffusion.T=100"),
    ("sample.steps=ddimx", "sample.steps='ddimx' does not fit.*ddim25"),
    ("sample.steps=fast", "sample.steps='fast' does not fit"),
    ("sample.n=0", "sample.n must be >= 1"),
    ("sample.batch_size=-1", "sample.batch_size must be >= 1"),
    ("sample.eta=-0.5", "sample.eta must be >= 0"),
    ("sample.every=0", "sample.every must be >= 1"),
    ("eval.metrics=[fid, bogus]", "eval.metrics item='bogus' is not valid; expected one of .*'mmd'"),
    ("eval.n_samples=0", "eval.n_samples must be >= 1"),
    ("train.lr=-1", "train: lr must be > 0"),
    ("init_from=experiment:images", "init_from='experiment:images'.*experiment:NAME/RUN"),
    ("init_from=''", "init_from="),
    ("init_from=experiment:images/a/b", "init_from="),
])
def test_bad_values_are_errors_listing_the_choices(override, message):
    with pytest.raises(ValueError, match=message):
        toy(override)


def test_zero_terminal_snr_needs_a_spacing_that_starts_at_the_last_step():
    zero = ("diffusion.zero_terminal_snr=true", "diffusion.parameterization=v")
    with pytest.raises(ValueError, match="sample.steps='ddim25' never visits the last step"):
        toy(*zero, "sample.steps=ddim25")  # range(0, 100, 4) ends at 96
    assert toy(*zero, "sample.steps=25").sample.steps == 25  # an even spread keeps t = 0 and t = T-1
    assert toy("sample.steps=ddim25").sample.steps == "ddim25"  # fine when the last step is not pure noise


def test_valid_choices_load():
    assert toy("diffusion.zero_terminal_snr=true", "diffusion.parameterization=v").diffusion.zero_terminal_snr
    assert toy("eval.metrics=" + str(list(METRICS))).eval.metrics == list(METRICS)
    for spec in ("runs/a", "runs/a/checkpoint.pt", "book/results/images/ddpm.safetensors", "experiment:images/ddpm"):
        assert toy(f"init_from={spec}").init_from == spec
    assert toy("method.kwargs={a: 1}").method == MethodConfig("ddpm", {"a": 1})


def test_method_name_must_be_registered():
    assert "ddpm" in pipeline.METHODS
    with pytest.raises(ValueError, match="method.name='nope' is not valid; expected one of .*'ddpm'"):
        toy("method.name=nope")


def test_configs_built_in_python_are_validated():
    with pytest.raises(ValueError, match="sample.sampler"):
        dataclasses.replace(RunConfig(), sample=dataclasses.replace(RunConfig().sample, sampler="euler"))
    with pytest.raises(ValueError, match="data.name"):
        from_dict(RunConfig, {"data": {"name": "imagenet"}})


# ------------------------------------------------------------------ differences
def test_config_differences_lists_changed_leaves():
    a = toy()
    assert config_differences(a, toy()) == []
    b = toy("train.lr=2e-4", "model.kwargs.hidden=32", "sample.steps=ddim10", "out_dir=elsewhere",
            "train.progress=false", "train.adam_betas=[0.9, 0.999]")
    assert config_differences(a, b) == [
        "model.kwargs.hidden: 128 -> 32", "sample.steps: None -> 'ddim10'", "train.lr: 0.002 -> 0.0002"]
    c = toy("model.kwargs={hidden: 128, depth: 3, dropout: 0.1}")
    assert config_differences(a, c) == ["model.kwargs.dropout: (unset) -> 0.1"]
    assert config_differences(a, b, ignore=("train", "model.kwargs", "out_dir", "train.progress")) == \
        ["sample.steps: None -> 'ddim10'"]


def test_data_split_is_checked_and_only_for_digits():
    cfg = load_config("shapes-ddpm", ["data.name=digits", "data.size=8", "data.split=train"])
    assert cfg.data.split == "train"
    with pytest.raises(ValueError, match="data.split"):
        load_config("shapes-ddpm", ["data.name=digits", "data.split=val"])
    with pytest.raises(ValueError, match="digits' only"):
        load_config("shapes-ddpm", ["data.split=test"])
