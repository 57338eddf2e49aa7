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
    exp = experiments.get(name)
    for run_name in exp.runs("smoke"):
        cfg = experiments.run_config(name, run_name, "smoke", root=tmp_path)  # chained runs read their source
        weights = out / f"{run_name}.safetensors"
        assert (out / f"{run_name}_loss.png").is_file() and (out / f"{run_name}_history.json").is_file()
        assert weights.is_file() == exp.keeps(run_name)
        if not exp.keeps(run_name):
            continue
        method = load_trained(cfg, weights)  # the fp16 export loads back into the run's method
        assert all(torch.isfinite(p).all() for p in method.parameters())


def test_committed_artifacts_match_definitions():
    assert experiments.check_artifacts() == []


@pytest.fixture(scope="module")
def smoke_digits(tmp_path_factory):
    """A real smoke-budget record of ddpm-digits (with ``git_commit`` reporting a clean tree)."""
    root = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments, "git_commit", lambda: "0123abc")
        experiments.run("ddpm-digits", budget="smoke", out_dir=root / "ddpm-digits", progress=False)
    return root


def _copy_with(smoke_digits, tmp_path, change=None):
    root = tmp_path / "results"
    shutil.copytree(smoke_digits, root)
    path = root / "ddpm-digits" / "metrics.json"
    if change is not None:
        record = json.loads(path.read_text())
        change(record)
        path.write_text(json.dumps(record))
    return root, path


def test_record_adds_up_and_lists_its_files(smoke_digits):
    record = json.loads((smoke_digits / "ddpm-digits" / "metrics.json").read_text())
    assert record["total_wall_time_s"] == pytest.approx(
        sum(record["train_wall_time_s"].values()) + record["evaluate_wall_time_s"], abs=0.11)
    assert {"ddpm.safetensors", "ddpm_loss.png", "ddpm_history.json"} <= set(record["files"])
    assert record["code_fingerprint"] == experiments.code_fingerprint("ddpm-digits")
    assert experiments.check_artifacts(smoke_digits) == []


def test_record_summary_counts_only_the_timed_runs():
    record = {"experiment": "demo", "commit": "0123abcdef", "pdlib_version": "0.1.0", "budget": "book",
              "machine": "x86_64, 2 threads, cpu", "train_wall_time_s": {"a": 90.0, "b": 0.0, "c": 30.0},
              "evaluate_wall_time_s": 12.0}
    assert experiments.record_summary(record) == ("demo: commit 0123abc, pdlib 0.1.0, budget book, x86_64, 2 "
                                                  "threads, cpu; 3 runs, 2 of them trained in 2.0 min, evaluated "
                                                  "in 0.2 min")
    record["train_wall_time_s"]["b"] = 60.0
    assert "; 3 runs trained in 3.0 min," in experiments.record_summary(record)


@pytest.mark.parametrize("change, expected", [
    (lambda r: r.update(commit="0123abc+dirty"), "uncommitted tree"),
    (lambda r: r["config"]["ddpm"]["train"].update(steps=5), "recorded config differs"),
    (lambda r: r.update(code_fingerprint="0" * 64), "code behind"),
    (lambda r: r["files"].update({"ddpm.safetensors": "0" * 64}), "changed since the record"),
    (lambda r: r.pop("files"), "malformed record"),
    (lambda r: r.update(experiment="gone"), "not defined any more"),
])
def test_check_artifacts_finds_each_problem(smoke_digits, tmp_path, change, expected):
    root, _ = _copy_with(smoke_digits, tmp_path, change)
    problems = experiments.check_artifacts(root)
    assert len(problems) == 1 and expected in problems[0], problems


def test_check_artifacts_reports_unreadable_records_and_changed_files(smoke_digits, tmp_path):
    root, path = _copy_with(smoke_digits, tmp_path)
    (root / "ddpm-digits" / "ddpm_history.json").write_text("[]")
    assert "ddpm_history.json: missing or changed" in experiments.check_artifacts(root)[0]
    path.write_text("{not json")
    assert "malformed record" in experiments.check_artifacts(root)[0]


def test_fingerprint_ignores_docstrings_but_not_code(monkeypatch, tmp_path):
    pkg = tmp_path / "pdlib"
    shutil.copytree(experiments.PDLIB_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(experiments, "PDLIB_DIR", pkg)
    before = experiments.code_fingerprint("ddpm-shapes")
    ddpm = pkg / "methods" / "ddpm.py"
    ddpm.write_text(ddpm.read_text().replace('"""DDPM as a method', '"""Reworded: DDPM as a method'))
    assert experiments.code_fingerprint("ddpm-shapes") == before
    ddpm.write_text(ddpm.read_text().replace(".flatten(1).mean(1)", ".flatten(1).sum(1)"))
    assert experiments.code_fingerprint("ddpm-shapes") != before


def test_unknown_experiment_and_budget():
    with pytest.raises(ValueError, match="unknown experiment"):
        experiments.get("nope")
    with pytest.raises(ValueError, match="budget"):
        experiments.definition("ddpm-shapes", "huge")


def test_results_root_reads_committed_artifacts_or_retrains_into_a_fresh_folder(monkeypatch, tmp_path):
    """The chapters' RETRAIN switch: without it the committed folder; with it every named experiment runs
    at the budget into a new folder (never over the committed artifacts)."""
    ran = []

    def fake_run(name, budget, out_dir, progress):
        ran.append((name, budget, out_dir))
        out_dir.mkdir(parents=True)

    monkeypatch.setattr(experiments, "run", fake_run)
    assert experiments.results_root("ddpm-shapes", root=tmp_path) == tmp_path and ran == []
    fresh = experiments.results_root(("a", "b"), retrain=True, budget="smoke", root=tmp_path)
    assert fresh != tmp_path and [(n, b) for n, b, _ in ran] == [("a", "smoke"), ("b", "smoke")]
    assert [o for _, _, o in ran] == [fresh / "a", fresh / "b"]


@pytest.mark.parametrize("budget", ["smoke", "book"])
def test_long_lddgan_differs_from_its_ablation_row_only_as_stated(budget):
    """Chapter 8 compares lddgan-digits-long with the ablation's lddgan-rec: same autoencoder definition,
    same networks, losses, seed and data; only the name, steps, batch size and lr_D may differ."""
    from pdlib.experiments import lddgan_long

    ablation = experiments.definition("lddgan-digits", budget)
    long = experiments.definition("lddgan-digits-long", budget)
    assert long["autoencoder"] == ablation["autoencoder"]
    row, base = long["lddgan-long"], ablation[lddgan_long.BASE_ROW]
    steps, base_steps = row["train"].pop("steps"), base["train"].pop("steps")
    assert steps == lddgan_long.LONG_STEPS[budget] and (budget == "smoke" or steps == 8 * base_steps)  # "8x longer"
    assert row["train"].pop("batch_size") == lddgan_long.CHANGES["batch_size"] != base["train"].pop("batch_size")
    assert row["method"]["kwargs"].pop("lr_d") == lddgan_long.CHANGES["lr_d"] != base["method"]["kwargs"].pop("lr_d")
    row.pop("name"), base.pop("name")
    assert row == base


@pytest.mark.parametrize("budget", ["smoke", "book"])
def test_long_ddgan_is_trained_like_the_long_lddgan(budget):
    """Chapter 7 sets ddgan-digits-long beside chapter 8's lddgan-digits-long: it is ddgan-digits' pixel run
    with the long latent run's changes (steps, batch size, lr_D) and nothing else."""
    from pdlib.experiments import ddgan_long

    row = experiments.definition("ddgan-digits-long", budget)["ddgan-long"]
    base = experiments.definition("ddgan-digits", budget)[ddgan_long.BASE_ROW]
    latent = experiments.definition("lddgan-digits-long", budget)["lddgan-long"]
    assert row["train"]["batch_size"] == latent["train"]["batch_size"] != base["train"].pop("batch_size")
    assert row["train"]["steps"] == latent["train"]["steps"]
    assert budget == "smoke" or row["train"]["steps"] == 8 * base["train"]["steps"]  # "8x the steps"
    base["train"].pop("steps")
    assert row["method"]["kwargs"]["lr_d"] == latent["method"]["kwargs"]["lr_d"] == latent["method"]["kwargs"]["lr_g"]
    assert row["method"]["kwargs"].pop("lr_d") != base["method"]["kwargs"].pop("lr_d")
    row["train"].pop("steps"), row["train"].pop("batch_size"), row.pop("name"), base.pop("name")
    assert row == base


@pytest.mark.parametrize("budget", ["smoke", "book"])
def test_long_wddgan_is_trained_like_the_long_pixel_ddgan(budget):
    """Chapter 7 sets wddgan-digits-long beside ddgan-digits-long: it is ddgan-digits' wavelet run with the long
    pixel run's steps, batch size and lr_D, and nothing else; and the long pixel run differs from its own base row
    in those same three settings, so the two long runs differ only where ddgan-digits' rows do."""
    from pdlib.experiments import ddgan_long, wddgan_long

    row = experiments.definition("wddgan-digits-long", budget)["wddgan-long"]
    base = experiments.definition("ddgan-digits", budget)[wddgan_long.BASE_ROW]
    pixel = experiments.definition("ddgan-digits-long", budget)["ddgan-long"]
    pixel_base = experiments.definition("ddgan-digits", budget)[ddgan_long.BASE_ROW]
    assert row["train"]["steps"] == pixel["train"]["steps"] and base["train"]["steps"] == pixel_base["train"]["steps"]
    assert budget == "smoke" or row["train"]["steps"] == 8 * base["train"]["steps"]  # "8x the steps"
    assert row["train"]["batch_size"] == pixel["train"]["batch_size"] != base["train"]["batch_size"]
    assert row["method"]["kwargs"]["lr_d"] == pixel["method"]["kwargs"]["lr_d"] != base["method"]["kwargs"]["lr_d"]
    assert base["method"]["kwargs"]["space"] == "wavelet" and row["name"] != base["name"]
    for long, short in ((row, base), (pixel, pixel_base)):
        long["train"].pop("steps"), long["train"].pop("batch_size"), long["method"]["kwargs"].pop("lr_d")
        short["train"].pop("steps"), short["train"].pop("batch_size"), short["method"]["kwargs"].pop("lr_d")
        long.pop("name"), short.pop("name")
        assert long == short
