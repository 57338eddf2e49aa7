"""Named book experiments: ``python -m pdlib experiment NAME --budget smoke|book|paper``.

An experiment is a set of training runs (``RunConfig`` per budget) plus an evaluation that writes the
artifacts a chapter loads into ``book/results/NAME/``: fp16 safetensors weights, figures, and a
``metrics.json`` recording the config, the pdlib version, the git commit, the wall times, a fingerprint
of the pdlib code that produced it and the SHA-256 of every artifact file. CI runs every experiment at
the smoke budget, and ``check_artifacts`` fails when a committed record is malformed, comes from an
uncommitted tree, no longer matches its experiment's definition or code, or its files were changed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from ..config import RunConfig, to_dict
from ..pipeline import RESULTS_DIR, checkpoint_path, export_weights, train_run
from ..train.checkpoint import file_sha256

PDLIB_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PDLIB_DIR.parent
#: The modules behind every training run's numbers (each experiment adds its own through ``code``).
CORE_CODE = ("schedules", "diffusion", "pipeline", "train.trainer", "train.plan", "train.ema", "methods.base")

BUDGETS = ("smoke", "book", "paper")


@dataclass
class Experiment:
    """``runs(budget)`` gives the named run configs; ``evaluate(methods, out_dir, budget)`` loads
    nothing itself: it gets the trained methods, writes figures into ``out_dir`` and returns results."""

    name: str
    description: str
    runs: Callable[[str], dict[str, RunConfig]]
    evaluate: Callable[[dict, Path, str], dict]
    code: tuple = ()  #: pdlib modules (dotted, below pdlib) its numbers depend on, beyond CORE_CODE
    #: False for sweeps whose chapter shows only their table, or the names of the runs whose weights the
    #: chapter loads (keeps the repo small)
    keep_weights: bool | tuple = True
    #: ``prepare(budget)`` writes what the runs read from disk (a generated data folder) before training
    prepare: Callable[[str], None] | None = None

    def keeps(self, run_name: str) -> bool:
        """Whether run ``run_name``'s weights are exported with the artifacts."""
        return self.keep_weights if isinstance(self.keep_weights, bool) else run_name in self.keep_weights


REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    REGISTRY[experiment.name] = experiment
    return experiment


def get(name: str) -> Experiment:
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def definition(name: str, budget: str) -> dict:
    """The recorded form of an experiment's runs at ``budget`` (output folders left out)."""
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    runs = {}
    for run_name, cfg in get(name).runs(budget).items():
        d = to_dict(cfg)
        d.pop("out_dir")
        d["train"].pop("checkpoint_path")
        d["train"].pop("log_path")
        d["train"].pop("progress")
        runs[run_name] = d
    return runs


def code_fingerprint(name: str) -> str:
    """SHA-256 over the code (docstrings and formatting left out: the AST) of the pdlib modules that
    experiment ``name`` depends on (``CORE_CODE``, the experiment's ``code`` and its own module)."""
    exp = get(name)
    own = [exp.runs.__module__.removeprefix("pdlib.")] if exp.runs.__module__.startswith("pdlib.") else []
    digest = hashlib.sha256()
    for module in sorted({*CORE_CODE, *exp.code, *own}):
        tree = ast.parse((PDLIB_DIR / (module.replace(".", "/") + ".py")).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        digest.update(module.encode() + ast.dump(tree).encode())
    return digest.hexdigest()


def git_commit() -> str:
    """The current commit, with ``+dirty`` when the work tree has uncommitted changes."""
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "pdlib"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(name: str, budget: str = "book", out_dir=None, progress: bool = True) -> Path:
    """Train every run of experiment ``name`` at ``budget``, export weights, evaluate, write metrics.json.

    Runs train in ``OUT/_work/RUN``; if a checkpoint is already there (an interrupted call), training
    resumes from it exactly. The work folder is removed at the end. ``point_at_runs`` resolves the configs'
    references to earlier runs and generated data."""
    exp = get(name)
    recorded = definition(name, budget)
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR / name
    work = out / "_work"
    out.mkdir(parents=True, exist_ok=True)
    if exp.prepare is not None:
        exp.prepare(budget)
    methods, wall = {}, {}
    for run_name, cfg in exp.runs(budget).items():
        cfg.out_dir = str(work / run_name)
        cfg.train.progress = progress
        point_at_runs(cfg, lambda run: work / run)  # earlier runs of this experiment: their work folders
        trainer = train_run(cfg, resume=checkpoint_path(cfg).is_file())  # an interrupted run goes on
        wall[run_name] = round(trainer.wall_time, 1)
        if exp.keeps(run_name):
            export_weights(trainer.model, out / f"{run_name}.safetensors",
                           metadata={"experiment": name, "run": run_name, "budget": budget, "steps": trainer.step})
        shutil.copy(Path(cfg.out_dir) / "loss.png", out / f"{run_name}_loss.png")
        (out / f"{run_name}_history.json").write_text(json.dumps(trainer.history))
        methods[run_name] = trainer.model.eval()
    start = time.perf_counter()
    results = exp.evaluate(methods, out, budget)
    evaluate_s = round(time.perf_counter() - start, 1)
    shutil.rmtree(work, ignore_errors=True)
    record = {
        "experiment": name, "budget": budget, "config": recorded, "results": results,
        "train_wall_time_s": wall, "evaluate_wall_time_s": evaluate_s,
        "total_wall_time_s": round(sum(wall.values()) + evaluate_s, 1),  # summed over resumed invocations
        "pdlib_version": __version__, "commit": git_commit(), "code_fingerprint": code_fingerprint(name),
        "torch_version": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                   f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
        "files": {p.name: file_sha256(p) for p in sorted(out.iterdir()) if p.is_file() and p.name != "metrics.json"},
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    return out


def run_all(budget: str = "book", progress: bool = True) -> float:
    """Run every registered experiment in order (later chapters may start from earlier artifacts);
    returns the summed training time in seconds."""
    total = 0.0
    for name in REGISTRY:
        out = run(name, budget=budget, progress=progress)
        total += sum(json.loads((out / "metrics.json").read_text())["train_wall_time_s"].values())
    return total


def results_root(names, *, retrain: bool = False, budget: str = "book", root=None) -> Path:
    """Where a chapter reads the artifacts of the experiments ``names``: the committed results folder
    ``root`` (default ``book/results``), or, with ``retrain``, a new temporary folder in which each of them
    is first run at ``budget`` (the chapters' ``RETRAIN`` switch; the committed artifacts stay untouched)."""
    if not retrain:
        return Path(root or RESULTS_DIR)
    import tempfile

    fresh = Path(tempfile.mkdtemp(prefix="pdlib-results-"))
    for name in [names] if isinstance(names, str) else names:
        run(name, budget=budget, out_dir=fresh / name, progress=False)
    return fresh


def run_config(name: str, run_name: str, budget: str = "book", root=None) -> RunConfig:
    """The config of run ``run_name`` of experiment ``name``, ready to load its exported weights: a weights
    source that names an earlier run of the experiment (``run:RUN``, e.g. LDDGAN's autoencoder) points at that
    run's exported weights in the results folder ``root/NAME`` (default ``book/results``)."""
    runs = get(name).runs(budget)
    if run_name not in runs:
        raise ValueError(f"experiment {name!r} has no run {run_name!r}; its runs: {', '.join(runs)}")
    cfg = runs[run_name]
    point_at_runs(cfg, lambda run: Path(root or RESULTS_DIR) / name / f"{run}.safetensors")
    return cfg


def point_at_runs(cfg: RunConfig, where: Callable[[str], Path]) -> None:
    """Make an experiment's run config concrete, in place: each weights source that names an earlier run of the
    same experiment (``run:RUN`` in ``init_from``, ``method.kwargs.perceptual_from`` or ``denoiser_from``) becomes
    ``where(RUN)``, and a relative ``data.root`` (a folder the experiment generates) is read from the repository's
    root, wherever the call is made from."""
    if cfg.data.root is not None:
        cfg.data.root = str(REPO_DIR / cfg.data.root)  # unchanged when absolute
    if cfg.init_from is not None and cfg.init_from.startswith("run:"):
        cfg.init_from = str(where(cfg.init_from.removeprefix("run:")))
    for key in ("perceptual_from", "denoiser_from"):
        source = cfg.method.kwargs.get(key)
        if isinstance(source, str) and source.startswith("run:"):
            cfg.method.kwargs = {**cfg.method.kwargs, key: str(where(source.removeprefix("run:")))}


def load_record(name: str, root=None) -> dict:
    """The committed ``metrics.json`` of experiment ``name``."""
    path = Path(root or RESULTS_DIR) / name / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no artifacts at {path.parent}; run: python -m pdlib experiment {name}")
    return json.loads(path.read_text())


def record_summary(record: dict) -> str:
    """One line on where a record's artifacts come from, for a chapter's first cell: the experiment, commit,
    pdlib version, budget and machine, and the training minutes of the runs that have them (a run resumed
    on its final checkpoint may record 0 s; those are counted apart) and the evaluation's."""
    wall = record["train_wall_time_s"]
    timed = [s for s in wall.values() if s > 0]
    runs = f"{len(wall)} runs" + (f", {len(timed)} of them" if len(timed) < len(wall) else "")
    return (f"{record['experiment']}: commit {record['commit'][:7]}, pdlib {record['pdlib_version']}, budget "
            f"{record['budget']}, {record['machine']}; {runs} trained in {sum(timed) / 60:.1f} min, evaluated in "
            f"{record['evaluate_wall_time_s'] / 60:.1f} min")


def check_artifacts(root=None) -> list[str]:
    """Problems with committed artifacts, one line each (empty when all is well): a record that is not
    valid JSON or lacks a field, an unknown experiment, a record from an uncommitted tree (``+dirty``),
    a recorded config or code fingerprint that differs from the experiment's current definition, and
    artifact files that are missing or differ from their recorded SHA-256."""
    problems = []
    for path in sorted(Path(root or RESULTS_DIR).glob("*/metrics.json")):
        try:
            record = json.loads(path.read_text())
            name, budget, commit = record["experiment"], record["budget"], record["commit"]
            config, fingerprint, files = record["config"], record["code_fingerprint"], record["files"]
        except (ValueError, KeyError, TypeError) as err:
            problems.append(f"{path}: malformed record ({type(err).__name__}: {err}); re-run its experiment")
            continue
        rerun = f"re-run: python -m pdlib experiment {name} --budget {budget}"
        if name not in REGISTRY:
            problems.append(f"{path}: experiment {name!r} is not defined any more")
            continue
        if str(commit).endswith("+dirty"):
            problems.append(f"{path}: produced from an uncommitted tree ({commit}); commit, then {rerun}")
        if config != definition(name, budget):
            problems.append(f"{path}: recorded config differs from the definition of {name!r} at budget "
                            f"{budget!r}; {rerun}")
        if fingerprint != code_fingerprint(name):
            problems.append(f"{path}: the pdlib code behind {name!r} changed since it was produced; {rerun}")
        for file, digest in files.items():
            f = path.parent / file
            if not f.is_file() or file_sha256(f) != digest:
                problems.append(f"{path.parent / file}: missing or changed since the record was written; {rerun}")
    return problems


# register the chapters' experiments
from . import (ddgan_long, gans, images, lddgan_long, lpl, metric_functions, recipe,  # noqa: E402,F401
               selfperceptual, wddgan_long)
