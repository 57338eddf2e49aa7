"""Labelled and guided sampling from the command line: ``pdlib.guidance.LabelledSampling`` (labels drawn per
call, guidance passed through) and the ``--label`` / ``--guidance-scale`` / ``--guidance-rescale`` flags of
``python -m pdlib sample`` and ``eval`` on a class-conditional run (the labelled shapes folder)."""

import json

import numpy as np

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
    b = LabelledSampling(m).labels(600, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and set(a.tolist()) == {0, 1, 2}  # seeded from the generator, over every class
    assert not torch.equal(uniform.labels(600, torch.Generator().manual_seed(1)), a)  # later batches go on
    uniform.sample(4)
    assert m.calls[-1]["guidance_scale"] is None  # labels alone: the conditional model, unguided
    assert uniform.describe() == {"labels": "uniform", "guidance_scale": None, "guidance_rescale": 0.0}
    assert fixed.describe()["labels"] == 2


def test_labels_do_not_use_the_sampling_generator():
    """The noise a seed gives must not depend on whether labels are drawn (``--label K`` vs uniform)."""
    g = torch.Generator().manual_seed(5)
    LabelledSampling(Recorder()).labels(10, g)
    assert torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(5)))


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
    with pytest.raises(SystemExit):
        cli.main(["sample", *common, "--n", "3", "--label", "red"])
    with pytest.raises(SystemExit, match="needs --guidance-scale"):
        cli.main(["sample", *common, "--n", "2", "--guidance-rescale", "0.7"])
    with pytest.raises(SystemExit, match="needs labels"):
        cli.main(["sample", *common, "--n", "2", "--label", "none", "--guidance-scale", "2"])

    def evaluate(*flags):
        capsys.readouterr()
        assert cli.main(["eval", *common, "--n-samples", "6", *flags]) == 0
        results = json.loads(capsys.readouterr().out)
        return results, np.load(results["samples_path"])["arr_0"]

    from pdlib.methods import DDPM

    seen = []
    original = DDPM.sample

    def recording(self, n, **kw):
        seen.append({k: kw.get(k) for k in ("y", "guidance_scale", "guidance_rescale")})
        return original(self, n, **kw)

    monkeypatch.setattr(DDPM, "sample", recording)
    plain, x_plain = evaluate()  # a conditional run: uniform labels by default
    assert plain["labels"] == "uniform" and plain["guidance_scale"] is None and 0 <= plain["validity"] <= 1
    guided, x_guided = evaluate("--guidance-scale", "3", "--guidance-rescale", "0.7")
    assert guided["samples_path"].endswith("eval_samples_6_label-uniform_w3_rescale0.7.npz")
    assert guided["samples_path"] != plain["samples_path"]  # one does not overwrite the other
    unconditional, x_none = evaluate("--label", "none")
    assert "labels" not in unconditional and unconditional["samples_path"].endswith("eval_samples_6.npz")
    plain_call, guided_call, none_call = seen
    assert plain_call["y"] is not None and plain_call["guidance_scale"] is None
    assert (guided_call["guidance_scale"], guided_call["guidance_rescale"]) == (3.0, 0.7)
    assert torch.equal(plain_call["y"], guided_call["y"])  # the same labels for the same seed
    assert none_call["y"] is None
    again, x_again = evaluate("--label", "uniform")
    assert np.array_equal(x_plain, x_again) and torch.equal(seen[-1]["y"], plain_call["y"])


def test_cli_refuses_labels_for_an_unconditional_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PDLIB_PROGRESS", "0")
    common = ["--config", "shapes-sp-mse", f"out_dir={tmp_path / 'run'}", "data.n=16", "train.batch_size=8",
              "model.kwargs={model_channels: 16, norm_groups: 8}", "sample.n=2", "sample.steps=3", "train.device=cpu"]
    assert cli.main(["train", *common, "train.steps=1"]) == 0
    with pytest.raises(ValueError, match="class-conditional"):
        cli.main(["sample", *common, "--n", "2", "--label", "0"])
