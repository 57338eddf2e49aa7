"""Book experiments: every experiment runs at the smoke budget, and committed artifacts match their
experiments' current definitions."""

import json
import shutil

import pytest
import torch

from pdlib import experiments
from pdlib.pipeline import load_trained


@pytest.mark.parametrize("name", sorted(experiments.REGISTRY))
def test_experiment_runs_at_smoke_budget(name, tmp_path):
    out = experiments.run(name, budget="smoke", out_dir=tmp_path / name, progress=False)
    record = json.loads((out / "metrics.json").read_text())
    assert record["experiment"] == name and record["budget"] == "smoke"
    assert record["config"] == experiments.definition(name, "smoke")
    assert record["pdlib_version"] and record["commit"] and record["total_wall_time_s"] >= 0
    assert not (out / "_work").exists()
    for run_name, cfg in experiments.get(name).runs("smoke").items():
        weights = out / f"{run_name}.safetensors"
        assert weights.is_file() and (out / f"{run_name}_loss.png").is_file()
        method = load_trained(cfg, weights)  # the fp16 export loads back into the run's method
        assert all(torch.isfinite(p).all() for p in method.parameters())


def test_committed_artifacts_match_definitions():
    assert experiments.check_artifacts() == []


def test_check_artifacts_detects_a_changed_definition(tmp_path):
    name = "ddpm-shapes"
    record = {"experiment": name, "budget": "book", "config": experiments.definition(name, "book")}
    (tmp_path / name).mkdir()
    (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    assert experiments.check_artifacts(tmp_path) == []
    record["config"]["ddpm"]["train"]["steps"] += 1
    (tmp_path / name / "metrics.json").write_text(json.dumps(record))
    problems = experiments.check_artifacts(tmp_path)
    assert len(problems) == 1 and "differs" in problems[0]
    shutil.rmtree(tmp_path / name)
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / "metrics.json").write_text(json.dumps({"experiment": "gone", "budget": "book"}))
    assert "not defined" in experiments.check_artifacts(tmp_path)[0]


def test_unknown_experiment_and_budget():
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.get("nope")
    with pytest.raises(ValueError, match="budget"):
        experiments.definition("ddpm-shapes", "huge")
