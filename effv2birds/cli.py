"""The ``effv2birds`` command: ``train`` and ``predict``.

Every ``TrainConfig`` field is a ``--kebab-case`` flag of ``train`` (booleans also as ``--no-...``,
optional values accept ``none``); ``--config FILE`` reads a TOML/JSON config and flags override it.
``[progressive]`` fields are ``--progressive-<field>``, and ``--progressive PRESET`` picks a preset.

>>> from effv2birds.cli import build_config, build_parser
>>> args = build_parser().parse_args(["train", "--image-size", "64", "--no-hflip", "--max-steps", "none"])
>>> cfg = build_config(args)
>>> cfg.image_size, cfg.hflip, cfg.max_steps
(64, False, None)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from typing import Any, Literal, Sequence, get_args, get_origin, get_type_hints

from effv2birds.config import ConfigError, ProgressiveConfig, TrainConfig, PROGRESSIVE_PRESETS

__all__ = ["main", "build_parser", "build_config"]

_HELP = {
    "data": "image folder, a saved DatasetDict folder, a hub data set id, or 'synthetic'",
    "batch_size": "images per process and micro-batch",
    "lr": "peak learning rate (per 256 images with --lr-scaling linear)",
    "resume": "'latest' or a checkpoint folder (RUN_DIR/checkpoints/step-...)",
    "output_dir": "run directory (weights, metrics, checkpoints, model card)",
    "mixed_precision": "auto (bf16 on a GPU that has it, else no; accelerate launch --mixed_precision wins), no, fp16 (GPU) or bf16",
    "early_stop_patience": "stop after this many epochs without a better val top-1 (after --min-epochs)",
}


def _field_type(hint: Any) -> tuple[Any, bool]:
    """(base type or Literal, optional?) of a dataclass field annotation."""
    args = get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _converter(base: Any, optional: bool, flag: str):
    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if get_origin(base) is Literal:
            choices = get_args(base)
            for choice in choices:
                if text == str(choice):
                    return choice
            raise argparse.ArgumentTypeError(f"choose one of {', '.join(map(str, choices))}")
        if base is bool:
            if text.lower() in ("true", "yes", "1", "on"):
                return True
            if text.lower() in ("false", "no", "0", "off"):
                return False
            raise argparse.ArgumentTypeError("use true or false")
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {base.__name__}") from None

    convert.__name__ = flag
    return convert


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name == "progressive":
            continue
        base, optional = _field_type(hints[f.name])
        flag = "--" + (prefix + f.name).replace("_", "-")
        dest = prefix + f.name
        default = getattr(defaults, f.name)
        help_text = _HELP.get(f.name, "") + f" (default: {default})"
        if base is bool and not optional:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
            continue
        metavar = "{" + ",".join(map(str, get_args(base))) + "}" if get_origin(base) is Literal else None
        if optional:
            help_text += "; 'none' to unset"
        parser.add_argument(flag, dest=dest, type=_converter(base, optional, flag), default=argparse.SUPPRESS,
                            metavar=metavar or f.name.upper(), help=help_text.strip())


def build_parser() -> argparse.ArgumentParser:
    """The ``effv2birds`` argument parser (``train`` and ``predict`` subcommands)."""
    parser = argparse.ArgumentParser(prog="effv2birds", description="Train and use EfficientNetV2 image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a model (run it under `accelerate launch` for several GPUs)",
                        description="Train a model. Flags override values from --config.")
    tr.add_argument("--config", metavar="FILE", help="a TOML or JSON TrainConfig file (e.g. a run's config.toml)")
    tr.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    _add_fields(tr, TrainConfig)
    group = tr.add_argument_group("progressive learning")
    group.add_argument("--progressive", dest="progressive_preset", choices=sorted(PROGRESSIVE_PRESETS),
                       default=argparse.SUPPRESS, help="a progressive-learning preset")
    _add_fields(group, ProgressiveConfig, prefix="progressive_")
    pr = sub.add_parser("predict", help="top-k labels of images from a trained run")
    pr.add_argument("run_dir", help="output_dir of a finished `effv2birds train`")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--which", default="best", help="best or last weights (default: best)")
    pr.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` from ``--config`` (if given) with every given flag applied on top."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "print_config")}
    progressive = {k[len("progressive_"):]: v for k, v in given.items() if k.startswith("progressive_")}
    flat = {k: v for k, v in given.items() if not k.startswith("progressive_")}
    base: dict[str, Any] = TrainConfig.from_file(args.config).to_dict() if args.config else {}
    prog = dict(base.get("progressive", {}))
    preset = progressive.pop("preset", None)
    if preset is not None:
        prog = {**dataclasses.asdict(ProgressiveConfig.from_preset(preset))}
    prog.update(progressive)
    data = {**base, **flat}
    if prog:
        data["progressive"] = prog
    return TrainConfig.from_dict(data)


def friendly_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConfigError]
    for module, names in (("effv2birds.data", ("DataError",)),
                          ("effv2birds.models", ("WeightsError", "ModelConfigError")),
                          ("effv2birds.training", ("CheckpointError", "NonFiniteLossError", "UnreadableImageError"))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        errors += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(errors)


def _predict(args: argparse.Namespace) -> int:
    from effv2birds.training import load_trained

    predictor = load_trained(args.run_dir, which=args.which, device=args.device)
    results = predictor.predict(args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps([{"image": str(img), "top_k": [{"label": l, "probability": p} for l, p in res]}
                          for img, res in zip(args.images, results)], indent=2))
        return 0
    for img, res in zip(args.images, results):
        print(img)
        for label, prob in res:
            print(f"  {prob:7.2%}  {label}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``effv2birds`` console script; returns the exit code (2: bad input).

    >>> main(["train", "--epochs", "0"])  # the message goes to stderr
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            config = build_config(args)
            if args.print_config:
                print(config.to_toml(), end="")
                return 0
            from effv2birds.training import train

            result = train(config)
            if os.environ.get("RANK", "0") == "0":  # once, also under `accelerate launch`
                print(f"best val top-1 {result.best_val_top1:.4f} at epoch {result.best_epoch}; "
                      f"run directory: {result.run_dir}")
            return 0
        return _predict(args)
    except ConfigError as exc:  # before anything heavy is imported
        print(f"effv2birds {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if isinstance(exc, friendly_errors()) or isinstance(exc, FileNotFoundError):
            print(f"effv2birds {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
