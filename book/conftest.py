"""pytest --nbval book: progress bars off in the kernels (stored outputs never hold timings), and a
time budget per chapter notebook that fails the run when a chapter gets too slow."""

import os
from collections import defaultdict

os.environ["PDLIB_PROGRESS"] = "0"

#: `jupyter-book build book` leaves copies of the notebooks under book/_build; never collect them.
collect_ignore_glob = ["_build/*"]

#: Every chapter must run top to bottom within this many seconds on a 2-core CPU (the toy chapters in
#: 2 minutes, the images chapter, which samples image models, in 3).
NOTEBOOK_BUDGET_S = 120.0
LONGER_BUDGETS_S = {"05_images.ipynb": 180.0, "06_gans.ipynb": 180.0, "07_ddgan.ipynb": 180.0,
                    "08_lddgan.ipynb": 180.0, "09_metric_functions.ipynb": 180.0,
                    "10_self_perceptual.ipynb": 180.0,
                    "11_lpl.ipynb": 180.0}

_elapsed: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.nodeid.endswith(".ipynb") or ".ipynb::" in report.nodeid:
        _elapsed[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    for path, seconds in sorted(_elapsed.items()):
        terminalreporter.write_line(f"notebook time {seconds:6.1f} s  {path}")


def pytest_sessionfinish(session, exitstatus):
    budget = {p: LONGER_BUDGETS_S.get(os.path.basename(p), NOTEBOOK_BUDGET_S) for p in _elapsed}
    slow = {p: s for p, s in _elapsed.items() if s > budget[p]}
    if slow and exitstatus == 0:
        for path, seconds in slow.items():
            print(f"\nFAILED time budget: {path} took {seconds:.0f} s > {budget[path]:.0f} s")
        session.exitstatus = 1
