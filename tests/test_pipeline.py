"""Assembling runs: the method registry, starting from an earlier run (``init_from``, also between the
runs of one experiment), and resumes that refuse a changed config."""

import pytest
import torch

import pdlib
from pdlib import experiments
from pdlib.cli import main as cli
from pdlib.config import load_config
from pdlib.pipeline import METHODS, build_method, export_weights, load_trained, read_weights, train_run

SMALL = ["data.n=256", "train.batch_size=32", "train.log_every=5", "sample.n=16", "diffusion.T=50",
         "model.kwargs={hidden: 16, depth: 1}", "train.progress=false"]


def cfg_at(tmp_path, *extra):
    return load_config("toy2d-ddpm", [*SMALL, f"out_dir={tmp_path}", *extra])


def test_method_registry_and_kwargs():
    assert "ddpm" in METHODS
    method = build_method(load_config("toy2d-ddpm", [*SMALL, "method.kwargs={cond_drop_prob: 0.25}"]))
    assert method.cond_drop_prob == 0.25
    with pytest.raises(ValueError, match="ddpm"):
        load_config("toy2d-ddpm", ["method.name=nope"])


def test_init_from_a_run_folder_and_an_export(tmp_path):
    first = train_run(cfg_at(tmp_path / "a", "train.steps=10"))
    ema = first.model.state_dict()
    export_weights(first.model, tmp_path / "a.safetensors", half=False)
    for source in (tmp_path / "a", tmp_path / "a" / "checkpoint.pt", tmp_path / "a.safetensors"):
        started = build_method(cfg_at(tmp_path / "b", f"init_from={source}"))
        for k, v in started.state_dict().items():
            assert torch.equal(v, ema[k]), (source, k)
    fresh = build_method(cfg_at(tmp_path / "c"))
    assert not torch.equal(fresh.state_dict()["net.inp.weight"], ema["net.inp.weight"])
    with pytest.raises(FileNotFoundError, match="no weights"):
        build_method(cfg_at(tmp_path / "d", f"init_from={tmp_path / 'missing.pt'}"))


def test_chained_runs_inside_an_experiment(tmp_path):
    def runs(budget):
        return {"base": load_config("toy2d-ddpm", [*SMALL, "train.steps=10"]),
                "tuned": load_config("toy2d-ddpm", [*SMALL, "train.steps=1", "train.lr=1e-9", "init_from=run:base",
                                                    "train.ema_decay=null"])}

    seen = {}

    def evaluate(methods, out, budget):
        seen.update(methods)
        return {}

    experiments.register(experiments.Experiment("chain-test", "test only", runs, evaluate))
    try:
        experiments.run("chain-test", budget="smoke", out_dir=tmp_path, progress=False)
    finally:
        experiments.REGISTRY.pop("chain-test")
    base, tuned = seen["base"].state_dict(), seen["tuned"].state_dict()
    for k in base:  # one step at lr 1e-9 from the base run's EMA weights
        torch.testing.assert_close(tuned[k], base[k], rtol=0, atol=1e-6)
    assert read_weights(tmp_path / "tuned.safetensors")  # exported like any run


def test_resume_with_a_changed_config_lists_the_differences(tmp_path, capsys):
    args = ["train", "--config", "toy2d-ddpm", *SMALL, f"out_dir={tmp_path}"]
    assert cli([*args, "train.steps=5"]) == 0
    with pytest.raises(pdlib.ConfigMismatchError, match=r"train.lr: 0.002 -> 0.0001"):
        cli([*args, "train.steps=10", "train.lr=1e-4", "--resume"])
    assert load_trained(cfg_at(tmp_path)) is not None
    assert cli([*args, "train.steps=10", "train.lr=1e-4", "--resume", "--allow-config-change"]) == 0
    assert cli([*args, "train.steps=12", "train.lr=1e-4", "--resume"]) == 0  # steps may change; lr is now stored
