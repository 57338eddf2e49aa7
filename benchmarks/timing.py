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


def machine_facts(device: torch.device) -> dict:
    """Where and when a benchmark ran: date, processor, GPU, cores, load, torch version, threads, device."""
    import os

    return {"date": time.strftime("%Y-%m-%d"), "machine": cpu_name(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(device)}


def write_results(result: dict, table: str, json_path, md_path) -> None:
    """Print the markdown ``table`` and write it and the JSON ``result`` to their files."""
    import json
    from pathlib import Path

    print(table)
    for path, text in ((Path(json_path), json.dumps(result, indent=2) + "\n"), (Path(md_path), table)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {json_path} and {md_path}")
