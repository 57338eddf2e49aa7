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


def add_step_timing_args(ap, defaults: dict, quick: dict) -> None:
    """The options every step-timing benchmark takes: batch, repeats, warm-up, device, threads, --quick and the
    output files (``defaults`` and ``quick``: the batch / repeats / warmup of a full and of a quick run)."""
    ap.add_argument("--batch", type=int, default=None,
                    help=f"batch size (default {defaults['batch']}, --quick {quick['batch']})")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per configuration")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    ap.add_argument("--quick", action="store_true", help=f"batch {quick['batch']}, {quick['repeats']} repeats, "
                                                         f"{quick['warmup']} warm-up (under a minute on 2 cores)")
    ap.add_argument("--json", default=None, metavar="OUT", help="JSON output (default under benchmarks/results/)")
    ap.add_argument("--markdown", default=None, metavar="OUT", help="markdown output (default next to the JSON)")


def resolve_step_timing_args(ap, args, defaults: dict, quick: dict, results_dir, stem: str):
    """Fill the batch / repeats / warmup left unset, check them, and return ``(json_path, md_path)``: under
    ``results_dir`` as ``STEM.json`` (``STEM_quick.json`` for --quick, so a quick run never overwrites a
    measurement) unless given."""
    from pathlib import Path

    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("batch", "repeats"):
        if getattr(args, key) < 1:
            ap.error(f"--{key} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    json_path = Path(args.json) if args.json else Path(results_dir) / f"{stem}{'_quick' if args.quick else ''}.json"
    return json_path, Path(args.markdown) if args.markdown else json_path.with_suffix(".md")


def time_training_steps(methods: dict, optimizers: dict, x0: torch.Tensor, *, warmup: int, repeats: int, device,
                        autocast=None) -> tuple[dict, dict]:
    """Time one training step (``method.loss(x0)``, backward, ``optimizer.step()``) of every method, interleaved
    (``interleaved_times``), each drawing from its own generator seeded 0; ``autocast()`` (optional) wraps the
    loss. Returns ``(times, medians)``, both keyed by the methods' names, in seconds."""
    import contextlib
    import statistics

    autocast = autocast or contextlib.nullcontext
    gens = {name: torch.Generator(device=device).manual_seed(0) for name in methods}

    def step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        with autocast():
            loss = methods[name].loss(x0, generator=gens[name])["loss"]
        loss.backward()
        optimizers[name].step()

    times = interleaved_times(step, methods, warmup=warmup, repeats=repeats, device=device)
    return times, {name: statistics.median(v) for name, v in times.items()}
