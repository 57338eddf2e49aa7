"""The command line on the toy 2D preset: files written, exact resume, strict configs, explicit counts."""

import json

import pytest
import torch

from pdlib import cli
from pdlib.config import RunConfig, from_dict, load_config, preset_names
from pdlib.train import load_checkpoint


def run(*argv):
    return cli.main(list(argv))


def test_presets_cover_the_issue():
    assert {"toy2d-ddpm", "shapes-ddpm", "cifar10-ddpm", "cifar10-improved", "celeba64-ddpm"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(load_config(name), RunConfig)


def test_paper_presets_hold_the_papers_settings():
    ho = load_config("cifar10-ddpm")
    assert (ho.diffusion.schedule, ho.diffusion.T, ho.train.lr, ho.train.batch_size, ho.train.ema_decay) == \
        ("linear", 1000, 2e-4, 128, 0.9999)
    nd = load_config("cifar10-improved")
    assert (nd.diffusion.schedule, nd.diffusion.T, nd.train.lr, nd.model.preset) == ("cosine", 4000, 1e-4, "improved-cifar10")


def test_unknown_keys_and_bad_overrides_are_errors():
    with pytest.raises(ValueError, match="train.stepz"):
        load_config("toy2d-ddpm", ["train.stepz=3"])
    with pytest.raises(ValueError, match="key=value"):
        load_config("toy2d-ddpm", ["train.steps"])
    with pytest.raises(ValueError, match="unknown config"):
        load_config("no-such-preset")
    with pytest.raises(ValueError, match="data.name"):
        from_dict(RunConfig, {"data": {"name": "imagenet"}})


def test_train_writes_artifacts_and_resume_is_exact(tmp_path):
    common = ["data.n=500", "train.batch_size=32", "train.log_every=5", "sample.n=50",
              "model.kwargs={hidden: 32, depth: 2}"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run("train", "--config", "toy2d-ddpm", "train.steps=20", f"out_dir={straight}", *common) == 0
    for name in ("checkpoint.pt", "log.jsonl", "loss.png", "config.json", "samples_0000020.png"):
        assert (straight / name).is_file(), name
    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert log[0] == {"event": "start", "global_batch": 32, "batch_size": 32, "processes": 1, "grad_accum": 1}
    assert [r["step"] for r in log[1:]] == [5, 10, 15, 20]

    assert run("train", "--config", "toy2d-ddpm", "train.steps=10", f"out_dir={split}", *common) == 0
    assert run("train", "--config", "toy2d-ddpm", "train.steps=20", f"out_dir={split}", "--resume", *common) == 0
    a, b = load_checkpoint(straight / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    assert b["step"] == 20
    for key in a["method"]:
        assert torch.equal(a["method"][key], b["method"][key]), key
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    assert (split / "log.jsonl").read_text() == (straight / "log.jsonl").read_text()  # no duplicate lines


def test_sample_and_eval_need_explicit_counts(tmp_path, capsys):
    out = tmp_path / "run"
    common = [f"out_dir={out}", "data.n=300", "train.batch_size=32", "model.kwargs={hidden: 32, depth: 2}",
              "sample.n=20", "eval.n_samples=null"]
    assert run("train", "--config", "toy2d-ddpm", "train.steps=5", *common) == 0
    assert run("sample", "--config", "toy2d-ddpm", "--n", "30", "--out", str(tmp_path / "s.png"), *common) == 0
    assert (tmp_path / "s.png").is_file()
    with pytest.raises(ValueError, match="how many samples"):
        run("eval", "--config", "toy2d-ddpm", *common)
    capsys.readouterr()
    assert run("eval", "--config", "toy2d-ddpm", "--n-samples", "40", *common) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["n_samples"] == 40
    assert results["sliced_wasserstein"] > 0 and "mmd" in results
