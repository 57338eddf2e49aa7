"""Labelled and guided sampling from the command line: ``pdlib.guidance.LabelledSampling`` (labels drawn per
call, guidance passed through) and the ``--label`` / ``--guidance-scale`` / ``--guidance-rescale`` flags of
``python -m pdlib sample`` and ``eval`` on a class-conditional run (the labelled shapes folder)."""

import json

import pytest
import torch
from torch import nn

from pdlib import cli
from pdlib.data.labelled_shapes import write_shapes_folder
from pdlib.guidance import LabelledSampling


class Recorder(nn.Module):
    """A stand-in method: remembers what ``sample`` was called with and returns zeros."""

    def __init__(self, classes=3):
        super().__init__()
        self.net = nn.Linear(1, 1)
        self.net.null_class = classes
        self.calls = []

    def sample(self, n, **kw):
        self.calls.append(kw)
        return torch.zeros(n, 2)


def test_labels_are_fixed_or_uniform_and_guidance_passes_through():
    m = Recorder()
    fixed = LabelledSampling(m, label=2, guidance_scale=3.0, guidance_rescale=0.7)
    fixed.sample(5, generator=torch.Generator().manual_seed(0), steps=7)
    call = m.calls[-1]
    assert call["y"].tolist() == [2] * 5 and call["guidance_scale"] == 3.0 and call["guidance_rescale"] == 0.7
    assert call["steps"] == 7
    uniform = LabelledSampling(m)
    a = uniform.labels(600, torch.Generator().manual_seed(1))
    b = uniform.labels(600, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and set(a.tolist()) == {0, 1, 2}  # from the generator, over every class
    uniform.sample(4)
    assert m.calls[-1]["guidance_scale"] is None  # labels alone: the conditional model, unguided


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="class-conditional"):
        LabelledSampling(nn.Linear(1, 1))
    with pytest.raises(ValueError, match="label must lie"):
        LabelledSampling(Recorder(), label=3)
    with pytest.raises(ValueError, match="rescale"):
        LabelledSampling(Recorder(), guidance_scale=2.0, guidance_rescale=1.5)


def test_cli_samples_and_evaluates_a_conditional_run_with_guidance(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PDLIB_PROGRESS", "0")
    root = write_shapes_folder(tmp_path / "data", 24, size=16)
    out = tmp_path / "run"
    common = ["--config", "shapes-sp-mse", "data.name=folder", f"data.root={root}", f"out_dir={out}",
              "model.kwargs={model_channels: 16, norm_groups: 8, num_classes: 3}", "train.dataset_labels=true",
              "method.kwargs={cond_drop_prob: 0.5}", "train.batch_size=8", "sample.n=2", "sample.steps=3",
              "train.device=cpu", "eval.metrics=[validity]"]
    assert cli.main(["train", *common, "train.steps=2"]) == 0
    grid = tmp_path / "guided.png"
    assert cli.main(["sample", *common, "--n", "4", "--label", "1", "--guidance-scale", "3",
                     "--guidance-rescale", "0.7", "--out", str(grid)]) == 0
    assert grid.is_file()
    assert cli.main(["sample", *common, "--n", "3", "--label", "uniform", "--out", str(grid)]) == 0
    with pytest.raises(SystemExit):
        cli.main(["sample", *common, "--n", "3", "--label", "red"])
    capsys.readouterr()
    assert cli.main(["eval", *common, "--n-samples", "6", "--guidance-scale", "2"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["n_samples"] == 6 and 0 <= results["validity"] <= 1
    with pytest.raises(SystemExit, match="needs --guidance-scale"):
        cli.main(["sample", *common, "--n", "2", "--guidance-rescale", "0.7"])


def test_cli_refuses_labels_for_an_unconditional_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PDLIB_PROGRESS", "0")
    common = ["--config", "shapes-sp-mse", f"out_dir={tmp_path / 'run'}", "data.n=16", "train.batch_size=8",
              "model.kwargs={model_channels: 16, norm_groups: 8}", "sample.n=2", "sample.steps=3", "train.device=cpu"]
    assert cli.main(["train", *common, "train.steps=1"]) == 0
    with pytest.raises(ValueError, match="class-conditional"):
        cli.main(["sample", *common, "--n", "2", "--label", "0"])
