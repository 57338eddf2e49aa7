"""Named book experiments: ``python -m pdlib experiment NAME --budget smoke|book|paper``.

An experiment is a set of training runs (``RunConfig`` per budget) plus an evaluation that writes the
artifacts a chapter loads into ``book/results/NAME/``: fp16 safetensors weights, figures, and a
``metrics.json`` recording the config, the pdlib version, the git commit and the wall time. CI runs every
experiment at the smoke budget and fails when a committed artifact's recorded config differs from the
experiment's current definition (``check_artifacts``).
"""

from __future__ import annotations

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

BUDGETS = ("smoke", "book", "paper")


@dataclass
class Experiment:
    """``runs(budget)`` gives the named run configs; ``evaluate(methods, out_dir, budget)`` loads
    nothing itself: it gets the trained methods, writes figures into ``out_dir`` and returns results."""

    name: str
    description: str
    runs: Callable[[str], dict[str, RunConfig]]
    evaluate: Callable[[dict, Path, str], dict]


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
    resumes from it exactly. The work folder is removed at the end."""
    exp = get(name)
    recorded = definition(name, budget)
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR / name
    work = out / "_work"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    methods, wall = {}, {}
    for run_name, cfg in exp.runs(budget).items():
        cfg.out_dir = str(work / run_name)
        cfg.train.progress = progress
        if cfg.init_from is not None and cfg.init_from.startswith("run:"):  # an earlier run of this experiment
            cfg.init_from = str(work / cfg.init_from.removeprefix("run:"))
        trainer = train_run(cfg, resume=checkpoint_path(cfg).is_file())  # an interrupted run goes on
        wall[run_name] = round(trainer.wall_time, 1)
        export_weights(trainer.model, out / f"{run_name}.safetensors",
                       metadata={"experiment": name, "run": run_name, "budget": budget, "steps": trainer.step})
        shutil.copy(Path(cfg.out_dir) / "loss.png", out / f"{run_name}_loss.png")
        (out / f"{run_name}_history.json").write_text(json.dumps(trainer.history))
        methods[run_name] = trainer.model.eval()
    results = exp.evaluate(methods, out, budget)
    record = {
        "experiment": name, "budget": budget, "config": recorded, "results": results,
        "train_wall_time_s": wall, "total_wall_time_s": round(time.perf_counter() - start, 1),
        "pdlib_version": __version__, "commit": git_commit(), "torch_version": torch.__version__,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
                   f"{'cuda' if torch.cuda.is_available() else 'cpu'}",
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return out


def load_record(name: str, root=None) -> dict:
    """The committed ``metrics.json`` of experiment ``name``."""
    path = Path(root or RESULTS_DIR) / name / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"no artifacts at {path.parent}; run: python -m pdlib experiment {name}")
    return json.loads(path.read_text())


def check_artifacts(root=None) -> list[str]:
    """Problems with committed artifacts: unknown experiments, or recorded configs that differ from the
    experiment's current definition at the recorded budget. Empty when all is well."""
    problems = []
    for path in sorted(Path(root or RESULTS_DIR).glob("*/metrics.json")):
        record = json.loads(path.read_text())
        name, budget = record.get("experiment"), record.get("budget")
        if name not in REGISTRY:
            problems.append(f"{path}: experiment {name!r} is not defined any more")
        elif record.get("config") != definition(name, budget):
            problems.append(f"{path}: recorded config differs from the definition of {name!r} at budget "
                            f"{budget!r}; re-run: python -m pdlib experiment {name} --budget {budget}")
    return problems


from . import images  # noqa: E402,F401  (registers the images chapter's experiments)
