"""What the benchmarks share: the processor's name and a timer that waits for the GPU."""

from __future__ import annotations

import platform
import time

import torch


def cpu_name() -> str:
    """The processor's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    """Seconds that ``fn()`` takes, with the device's queued work finished before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_times(step, names, *, warmup: int, repeats: int, device) -> dict:
    """``{name: [seconds, ...]}``: ``step(name)`` run ``warmup`` times per name untimed, then ``repeats``
    rounds in which every name is timed once, the order rotating from round to round (so slow drifts of
    the machine hit every configuration alike)."""
    names = tuple(names)
    for name in names:
        for _ in range(warmup):
            step(name)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(lambda name=name: step(name), device))
    return times
