"""Reproduce every experiment of the EfficientNetV2-S reproduction study, and write a report.

Command:   accelerate launch examples/reproduce.py            (or: python examples/reproduce.py)
Hardware:  any; the default `quick` preset runs on a 2-core CPU.
Run time:  quick preset, all 18 runs on built-in synthetic birds: about 6 minutes on a 2-core CPU
           (pretrained runs are skipped offline unless --weights FILE or a cached file exists).
Result:    OUTPUT/report.md, results.csv, results.json and PNG plots; the quick preset is a smoke
           run (4 epochs of 3 steps per run), so its accuracies are near chance by design. The study's
           settings are `--preset blog`; our recipe is `--preset ours`: on birds25-mini at 32 px,
           40.6 % test top-1 (the study: 6 %) in about an hour on a 2-core CPU (docs/results.md).

Examples:
    accelerate launch examples/reproduce.py --experiment new-data --preset ours \\
        --data ../shared/data/birds25-mini --image-sizes 32 --output outputs/birds-ours
    accelerate launch --multi_gpu --num_processes 4 examples/reproduce.py --preset blog --data ~/data/birds
    python examples/reproduce.py --experiment pretrained --weights ~/Downloads/efficientnet_v2_s-dd5fe13b.pth
    python examples/reproduce.py --config examples/configs/birds32.toml --set epochs=5 --set lr=1e-3

Rerunning the same command skips finished runs (reusing their results) and resumes interrupted ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib

from effv2birds.cli import friendly_errors
from effv2birds.config import ConfigError
from effv2birds.study import EXPERIMENTS, PRESETS, plan_runs, run_planned, write_report
from effv2birds.study.runner import load_skipped, save_skipped


def parse_set(items: list[str]) -> dict:
    """``--set key=value`` pairs, values parsed as TOML (numbers, booleans, strings)."""
    values = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} is not key=value; e.g. --set epochs=5")
        try:
            values[key.strip().replace("-", "_")] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip().replace("-", "_")] = raw  # a bare string
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="all", choices=[*EXPERIMENTS, "all"])
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--data", help="folder, hub data set id or 'synthetic' (default: the preset's)")
    parser.add_argument("--image-sizes", type=int, nargs="+",
                        help="sizes of new-data and progressive (default: 32 64 for quick, else 32 128)")
    parser.add_argument("--output", default="outputs/reproduce")
    parser.add_argument("--config", help="a TOML file of TrainConfig values (see examples/configs/)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the report of every run already in --output")
    parser.add_argument("--title", help="the report's title (default: names the preset)")
    parser.add_argument("--weights", help="pretrained weights file for the pretrained experiment")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="train the new-data runs once per seed (default: the config's seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any TrainConfig field, e.g. --set epochs=5 (repeatable)")
    args = parser.parse_args(argv)
    title = args.title or f"Reproduction report ({args.preset} preset)"
    if args.report_only:
        write_report(args.output, [], load_skipped(args.output), title=title)
        print(f"report: {args.output}/report.md")
        return 0

    try:
        overrides = parse_set(args.set)
        overrides["data"] = args.data
        runs = plan_runs(args.experiment, preset=args.preset, output_dir=args.output,
                         image_sizes=tuple(args.image_sizes) if args.image_sizes else None, config_file=args.config, overrides=overrides,
                         seeds=tuple(args.seeds) if args.seeds else None)
        if args.weights:
            runs = [dataclasses.replace(r, config=r.config.replace(weights=args.weights)) if r.needs_weights else r
                    for r in runs]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        skipped = run_planned(runs)
    except friendly_errors() as exc:  # bad data, config or weights: the message says what to fix
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        skipped = save_skipped(args.output, skipped)
        write_report(args.output, runs, skipped, title=title)
        print(f"report: {args.output}/report.md")
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
