"""The ``effv2birds`` command: ``train``, ``evaluate`` and ``predict``.

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
from pathlib import Path
from typing import Any, Literal, Sequence, get_args, get_origin, get_type_hints

from effv2birds.config import (ConfigError, ProgressiveConfig, TrainConfig, PROGRESSIVE_PRESETS, field_type, parse_value,
                               resolve_config)
from effv2birds.errors import Effv2birdsError
from effv2birds.presets import PRESETS
from effv2birds.run_files import SUMMARY

__all__ = ["main", "build_parser", "build_config"]

_HELP = {
    "data": "image folder, a saved DatasetDict folder, a hub data set id, or 'synthetic'",
    "batch_size": "images per process and micro-batch",
    "photo_size": "make every photo this size first (e.g. the study's 32), then resize it to --image-size",
    "bn_momentum": "BatchNorm running-statistics momentum, PyTorch's convention (TensorFlow's decay 0.99 = 0.01); "
                   "none: 0.1",
    "ema_bn_images": "with --ema-decay: train photos the EMA's BatchNorm statistics are measured on before each "
                     "evaluation (0: copy the model's)",
    "lr": "peak learning rate (per 256 images with --lr-scaling linear)",
    "resume": "'latest' or a checkpoint folder (RUN_DIR/checkpoints/step-...)",
    "output_dir": "run directory (weights, metrics, checkpoints, model card)",
    "mixed_precision": "auto (bf16 on a GPU that has it, else no; accelerate launch --mixed_precision wins), no, fp16 (GPU) or bf16",
    "early_stop_patience": "stop after this many epochs without a better val top-1 (after --min-epochs)",
    "log_with": "an accelerate tracker (its package must be installed); auto: tensorboard when installed",
}


def _converter(cls: type, name: str, flag: str):
    """argparse ``type=`` for a config field: the same parsing as ``--set`` (config.parse_value)."""
    def convert(text: str) -> Any:
        try:
            return parse_value(name, text, cls)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    convert.__name__ = flag
    return convert


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    hints = get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name == "progressive":
            continue
        base, optional = field_type(hints[f.name])
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
        parser.add_argument(flag, dest=dest, type=_converter(cls, f.name, flag), default=argparse.SUPPRESS,
                            metavar=metavar or f.name.upper(), help=help_text.strip())


def build_parser() -> argparse.ArgumentParser:
    """The ``effv2birds`` argument parser (``train``, ``evaluate``, ``predict``, ``export``, ``compare``)."""
    parser = argparse.ArgumentParser(prog="effv2birds", description="Train and use EfficientNetV2 image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a model (run it under `accelerate launch` for several GPUs)",
                        description="Train a model. Flags override values from --config.")
    tr.add_argument("--config", metavar="FILE", help="a TOML or JSON TrainConfig file (e.g. a run's config.toml)")
    tr.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    tr.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="a named recipe (effv2birds.presets); --config and flags override it")
    tr.add_argument("--backend", choices=("torchvision", "timm"), default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS)  # deprecated: --model timm/NAME names the backend
    _add_fields(tr, TrainConfig)
    group = tr.add_argument_group("progressive learning")
    group.add_argument("--progressive", dest="progressive_preset", choices=sorted(PROGRESSIVE_PRESETS),
                       default=argparse.SUPPRESS, help="a progressive-learning preset")
    _add_fields(group, ProgressiveConfig, prefix="progressive_")
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_compare(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _prediction_file(text: str) -> str:
    if not text.lower().endswith((".csv", ".jsonl")):  # training.prediction_files.PREDICTION_FORMATS
        raise argparse.ArgumentTypeError(f"{text!r}: name the file .csv or .jsonl (one row per image)")
    return text


_TTA = ("none", "flip")  # effv2birds.training.TTA_MODES (not imported here: it needs torch)


def _add_predict(sub: Any) -> None:
    pr = sub.add_parser("predict", help="top-k labels of images from a trained run",
                        description="Top-k labels of images; unreadable files are reported and skipped (exit 1).")
    pr.add_argument("run_dir", help="output_dir of a finished `effv2birds train`")
    pr.add_argument("images", nargs="+", metavar="PATH", help="image files, folders (searched recursively), globs")
    pr.add_argument("--top-k", type=_positive_int, default=5, help="labels per image (default: 5)")
    pr.add_argument("--batch-size", type=_positive_int, default=32, help="images per forward pass (default: 32)")
    pr.add_argument("--tta", choices=_TTA, default="none", help="flip: average each photo with its mirror image")
    pr.add_argument("--output", metavar="FILE", type=_prediction_file,
                    help="write one row per image to FILE (.csv or .jsonl)")
    pr.add_argument("--which", default="best", help="best or last weights (default: best)")
    pr.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_evaluate(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="score a trained run on labelled photos (also under `accelerate launch`)",
                        description="Top-1/top-5/macro-F1, per-class report, confusion matrix, top losses and a "
                                    "leak check against the training photos, written to RUN_DIR/eval/NAME/.")
    ev.add_argument("run_dir", help="output_dir of a finished `effv2birds train`")
    ev.add_argument("data", nargs="?", default=None,
                    help="labelled photos: class folders, a saved DatasetDict folder or a hub data set id "
                         "(default: the run's own data, split as in training, so --split validation works)")
    ev.add_argument("--split", choices=("train", "validation", "test", "all"), default=None,
                    help="default: test if the data has one, else all photos")
    ev.add_argument("--name", help="folder under RUN_DIR/eval (default: from the data path and split)")
    ev.add_argument("--which", default="best", help="best or last weights (default: best)")
    ev.add_argument("--tta", choices=_TTA, default="none", help="flip: average each photo with its mirror image")
    ev.add_argument("--ignore-unknown-classes", action="store_true",
                    help="leave out photos of classes the run was not trained on (default: an error)")
    ev.add_argument("--batch-size", type=_positive_int, default=64, help="photos per process and batch (default: 64)")
    ev.add_argument("--no-leak-check", dest="leak_check", action="store_false",
                    help="do not look for near-duplicates of training photos")
    ev.add_argument("--max-distance", type=int, default=None,
                    help="near-duplicate threshold in bits of the 64-bit dHash (default: 3)")
    ev.add_argument("--image-column", help="image column of a hub data set")
    ev.add_argument("--label-column", help="label column of a hub data set")
    ev.add_argument("--cache-dir", help="where the resized photos are cached (default: the datasets cache)")
    ev.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is available")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a summary")


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of ``--preset`` < ``--config`` < the given flags (config.resolve_config)."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "print_config", "preset")}
    progressive = {k[len("progressive_"):]: v for k, v in given.items() if k.startswith("progressive_")}
    flags = {k: v for k, v in given.items() if not k.startswith("progressive_")}
    if progressive:
        flags["progressive"] = progressive  # a "preset" key starts from that preset
    return resolve_config(preset=getattr(args, "preset", None), config_file=args.config, overrides=flags)


def friendly_errors() -> tuple[type[BaseException], ...]:
    """The errors the command prints as one line (exit 2) instead of a traceback: every
    ``Effv2birdsError`` (bad config, data, weights, checkpoint, export) names the problem and the fix."""
    return (Effv2birdsError,)


def _add_compare(sub: Any) -> None:
    co = sub.add_parser("compare", help="runs side by side: what each changed and its best validation top-1",
                        description="Compare training runs: the first is the reference; each other row names the "
                                    "config values it changed. Choose on validation, never on test.")
    co.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                    help="output_dirs of `effv2birds train` (also unfinished), or CSVs written by --curves (runs whose "
                         "folders are gone, e.g. docs/recipes/*-curves.csv)")
    co.add_argument("--curves", metavar="FILE.csv", help="also write every run's epochs to this CSV")
    co.add_argument("--plot", metavar="FILE.png", help="also draw every run's top-1 by epoch in this PNG "
                                                      "(validation solid, train dashed)")
    co.add_argument("--title", help="the --plot figure's title (default: runs)")
    co.add_argument("--json", action="store_true", help="print the rows as JSON instead of a markdown table")


def _compare(args: argparse.Namespace) -> int:
    from effv2birds.study.compare import compare_runs, format_comparison, plot_curves, read_runs, write_curves

    if args.title is not None and not args.plot:  # a title with no figure would be dropped without a word
        raise ConfigError("--title names the --plot figure, and no --plot FILE.png was given: add one, or drop --title")
    runs = read_runs(args.run_dirs)  # once, for the table, the CSV and the figure
    rows = compare_runs(runs)
    print(json.dumps(rows, indent=2) if args.json else format_comparison(rows))
    if args.curves:
        count = write_curves(args.curves, runs)
        print(f"{count} epoch row(s) written to {args.curves}", file=sys.stderr)
    if args.plot:
        count = plot_curves(args.plot, runs, title=args.title)
        print(f"{count} run(s) drawn in {args.plot}", file=sys.stderr)
    return 0


def _add_export(sub: Any) -> None:
    ex = sub.add_parser("export", help="ONNX, TorchScript or a Hugging Face Hub folder of a trained run",
                        description="Export a run's weights; ONNX and TorchScript are checked against PyTorch.")
    ex.add_argument("run_dir", help="output_dir of a finished `effv2birds train` (or a hub folder)")
    ex.add_argument("--format", required=True, choices=("onnx", "torchscript", "hub"),  # export.FORMATS (needs torch)
                    help="onnx / torchscript: one file (+ FILE.json preprocessing); hub: a folder for the Hub")
    ex.add_argument("--output", required=True, metavar="PATH", help="the file (onnx, torchscript) or folder (hub)")
    ex.add_argument("--which", default="best", help="best or last weights (default: best)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output")
    ex.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the hub folder to this Hub repository")
    ex.add_argument("--private", action="store_true", default=None, help="create the Hub repository private")


def _export(args: argparse.Namespace) -> int:
    from effv2birds.export import export_run

    result = export_run(args.run_dir, args.format, args.output, which=args.which, overwrite=args.overwrite,
                        push_to_hub=args.push_to_hub, private=args.private)
    print("\n".join(result.summary()))
    return 0


def _report_unreadable(result: Any) -> int:
    """1 (and the reason on stderr) for an image that could not be read, else 0."""
    if result.error is None:
        return 0
    print(f"effv2birds predict: {result.error}", file=sys.stderr)
    return 1


def _predict(args: argparse.Namespace) -> int:
    """Exit 0 when every image was read, 1 when some were not (each named on stderr and in its row)."""
    from effv2birds.data import expand_image_paths
    from effv2birds.training import load_trained
    from effv2birds.training.prediction_files import PredictionWriter

    predictor = load_trained(args.run_dir, which=args.which, device=args.device)  # first: the first argument
    images = expand_image_paths(args.images)
    results = predictor.predict_iter(images, top_k=args.top_k, batch_size=args.batch_size, tta=args.tta)
    failed = 0
    if args.output:
        with PredictionWriter(args.output, top_k=min(args.top_k, len(predictor.class_names))) as out:
            for res in results:
                out.write(res.image, res.top_k, res.error)
                failed += _report_unreadable(res)
        print(f"{out.rows} image(s), {out.errors} unreadable, written to {args.output}")
    elif args.json:
        rows = []
        for res in results:
            failed += _report_unreadable(res)
            top = None if res.top_k is None else [{"label": l, "probability": p} for l, p in res.top_k]
            rows.append({"image": str(res.image), "top_k": top, "error": res.error})
        print(json.dumps(rows, indent=2))
    else:
        for res in results:
            failed += _report_unreadable(res)
            if res.top_k is not None:
                print(res.image)
                for label, prob in res.top_k:
                    print(f"  {prob:7.2%}  {label}")
    return 1 if failed else 0


def _evaluate(args: argparse.Namespace) -> int:
    from effv2birds.training.run_eval import evaluate_run, format_summary

    names = ("split", "name", "which", "tta", "ignore_unknown_classes", "batch_size", "leak_check", "image_column",
             "label_column", "cache_dir", "cpu")
    options = {k: getattr(args, k) for k in names}
    if args.max_distance is not None:
        options["max_distance"] = args.max_distance
    result = evaluate_run(args.run_dir, args.data, **options)
    if os.environ.get("RANK", "0") == "0":  # once, also under `accelerate launch`
        print((Path(result["out_dir"]) / SUMMARY).read_text() if args.json else format_summary(result))
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
        if args.command == "export":
            return _export(args)
        if args.command == "evaluate":
            return _evaluate(args)
        if args.command == "compare":
            return _compare(args)
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
