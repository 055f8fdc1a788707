"""The reproduction study's experiments as lists of named training runs.

A *preset* is a set of TrainConfig values (the study's own settings, a quick smoke, our recipe);
an *experiment* turns a base config into the runs it compares. Precedence, lowest to highest:
TrainConfig defaults < preset (with its values for the photo size) < config file < explicit overrides
(``--set``, ``--data`` ...): :func:`effv2birds.config.resolve_values`, whose layers
(:func:`~effv2birds.config.config_layers`, :func:`~effv2birds.config.merge_layers`) every run is built from.

>>> runs = plan_runs("ablation", preset="quick", output_dir="out")
>>> [r.name for r in runs][:2]
['ablation/default', 'ablation/all_mbconv']
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from effv2birds.config import (ConfigError, ProgressiveConfig, TrainConfig, config_layers, merge_layers,
                               photo_size_layer)
from effv2birds.presets import BLOG, PRESETS
from effv2birds.run_files import SUMMARY

__all__ = ["EXPERIMENTS", "PRESETS", "PRESET_IMAGE_SIZES", "STUDY_FIGURES", "STUDY_RECIPE", "PlannedRun", "plan_runs", "run_status",
           "study_figure"]

EXPERIMENTS = ("new-data", "pretrained", "hparams", "ablation", "progressive")

# The study's *recipe* without its budget (epochs, stopping, data): the new-data experiment trains it
# beside the chosen preset at the same budget, so the two recipes are compared on equal terms.
# Fields a preset may have changed are set back to what the study used (torchvision's defaults).
_BUDGET_KEYS = ("epochs", "min_epochs", "early_stop_patience", "per_class")
STUDY_RECIPE: dict[str, Any] = {
    **{k: v for k, v in BLOG.items() if k not in _BUDGET_KEYS},
    "dropout": None, "stochastic_depth": None, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "ema_decay": None,
    "ema_bn_images": TrainConfig.ema_bn_images,
    "grad_clip": None, "crop_padding": 4, "loss": "cross_entropy",
}

# Image sizes of the new-data and progressive experiments when none are given. The synthetic birds are
# drawn at 64 px (their fine-detail twins need more than 32 px), so quick runs 32 and 48 px: 48 px shows
# the resolution effect at about half the cost of 64 px, which keeps the main job under 15 minutes.
PRESET_IMAGE_SIZES: dict[str, tuple[int, ...]] = {"quick": (32, 48)}
DEFAULT_IMAGE_SIZES = (32, 128)  # the study's


# Published figures of the reproduction study (best test top-1, %), keyed by (experiment, run).
STUDY_FIGURES: dict[tuple[str, str], float] = {
    ("new-data", "32px"): 6.0,
    ("new-data", "128px"): 13.8,
    ("pretrained", "study-head-not-adapted"): 8.08,
}



def study_figure(experiment: str, run: str) -> float | None:
    """The study's published figure for a run, also for its seed repeats and its study-recipe twin.

    >>> study_figure("new-data", "32px-study-recipe-seed2"), study_figure("hparams", "baseline")
    (6.0, None)
    """
    return STUDY_FIGURES.get((experiment, run.split("-")[0]))


ABLATION_VARIANTS = ("default", "all_mbconv", "all_fused", "half_layers", "four_stage")


@dataclass(frozen=True)
class PlannedRun:
    """One training run of an experiment: its name (``experiment/run``) and resolved config."""

    experiment: str
    run: str
    config: TrainConfig
    note: str = ""
    needs_weights: bool = False
    baseline_of_weights: bool = False  # only meaningful beside the runs that need weights
    recipe: str = ""  # the preset the run's recipe comes from ("study" for the study's recipe)

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.run}"

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir)


def _config(values: dict[str, Any], output_dir: Path, name: str, **changes: Any) -> TrainConfig:
    # the study's sizes are photo sizes: a run feeds its photos at a larger input only where planned so
    merged = {**values, "photo_size": None, **changes, "output_dir": str(output_dir / name)}
    return TrainConfig.from_dict(merged)


def _values_for_photo_size(layers: tuple[dict[str, Any], list[dict[str, Any]]], recipe: str,
                 size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values, sizes)`` of a run on the study's photos of ``size`` px. ``values``: ``layers``
    (:func:`~effv2birds.config.config_layers`) merged with the recipe's values for that photo size in their
    place of the one precedence (:func:`~effv2birds.config.merge_layers`), less its budget (epochs), which
    gives way to the study's, the same for every run. ``sizes``: the network input the recipe gives those
    photos, which the study sets whatever the layers say, since its sizes are photo sizes.

    >>> from effv2birds.config import config_layers
    >>> values, sizes = _values_for_photo_size(config_layers(preset="ours"), "ours", 32)
    >>> sizes, values["epochs"]
    ({'photo_size': 32, 'image_size': 64}, 40)
    """
    preset_layer, user_layers = layers
    by_size = {k: v for k, v in photo_size_layer(recipe, size).items() if k not in _BUDGET_KEYS}
    input_size = by_size.pop("image_size", size)
    sizes = {"image_size": size} if input_size == size else {"photo_size": size, "image_size": input_size}
    return merge_layers(preset_layer, by_size, *user_layers), sizes


def plan_runs(
    experiment: str = "all",
    *,
    preset: str = "quick",
    output_dir: str | Path = "outputs/reproduce",
    image_sizes: tuple[int, ...] | None = None,
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    seeds: tuple[int, ...] | None = None,
) -> list[PlannedRun]:
    """The runs an experiment (or ``"all"``) consists of, each with its own run directory.

    New-data trains the preset's recipe and the study's recipe (:data:`STUDY_RECIPE`) at the same
    budget, once per seed of ``seeds`` (default: the config's seed); a seed other than the config's
    adds ``-seed<N>`` to the run name. Its ``<size>px`` runs train on photos of that size, which the
    preset's recipe may feed at a larger input (:data:`~effv2birds.presets.PHOTO_SIZE_RECIPES`: ``ours`` gives
    32 px photos a 64 px input). ``image_sizes`` default: :data:`PRESET_IMAGE_SIZES` of the
    preset, else the study's 32 and 128 px.

    >>> [r.name for r in plan_runs("new-data", image_sizes=(32,), seeds=(0, 1))]
    ['new-data/32px', 'new-data/32px-study-recipe', 'new-data/32px-seed1', 'new-data/32px-study-recipe-seed1']
    """
    names = EXPERIMENTS if experiment == "all" else (experiment,)
    for name in names:
        if name not in EXPERIMENTS:
            raise ConfigError(f"--experiment {name!r} is unknown; choose one of {', '.join(EXPERIMENTS)} or 'all'")
    if image_sizes is None:
        image_sizes = PRESET_IMAGE_SIZES.get(preset, DEFAULT_IMAGE_SIZES)
    if not image_sizes or any(int(s) <= 0 for s in image_sizes):
        raise ConfigError(f"--image-sizes {image_sizes!r} is not valid: give one or more sizes in pixels, e.g. 32 128")
    layers = config_layers(preset=preset, config_file=config_file, overrides=overrides)
    # no photo-size layer here: the study's sizes are set per run (new-data below)
    values = merge_layers(layers[0], *layers[1])
    out = Path(output_dir)
    small = min(image_sizes)
    runs: list[PlannedRun] = []

    if "new-data" in names:
        recipes = [("", {}, preset)] if preset == "blog" else [("", {}, preset), ("-study-recipe", STUDY_RECIPE, "study")]
        base_seed = int(values.get("seed", TrainConfig.seed))
        for seed in seeds or (base_seed,):
            tag = "" if seed == base_seed else f"-seed{seed}"
            for size in image_sizes:
                for suffix, recipe, recipe_name in recipes:
                    run = f"{size}px{suffix}{tag}"
                    size_values, sizes = _values_for_photo_size(layers, recipe_name, size)
                    runs.append(PlannedRun("new-data", run, _config(size_values, out, f"new-data/{run}", **recipe,
                                                                    **sizes, seed=seed), recipe=recipe_name))

    if "pretrained" in names:
        # The weights' own preprocessing: resize + center crop, ImageNet normalisation. The study used
        # 384 px; smaller presets train at the largest requested size to stay affordable.
        size = 384 if preset in ("blog", "full") else max(image_sizes)
        # ImageNet weights exist for the default architecture only, so all three runs use it
        common = dict(image_size=size, resize="resize_crop", normalize=True, variant="default",
                      width_multiplier=1.0, depth_multiplier=1.0)
        pre = dict(common, pretrained=True)
        runs += [
            PlannedRun("pretrained", "linear-probe", _config(values, out, "pretrained/linear-probe",
                       **pre, freeze_backbone=True), needs_weights=True),
            PlannedRun("pretrained", "fine-tune", _config(values, out, "pretrained/fine-tune", **pre),
                       needs_weights=True),
            PlannedRun("pretrained", "scratch", _config(values, out, "pretrained/scratch", **common),
                       note="from scratch, same budget and preprocessing", baseline_of_weights=True),
        ]

    if "hparams" in names:
        base_schedule = values.get("schedule", TrainConfig.schedule)
        other = ("constant", "no-plateau") if base_schedule == "plateau" else ("plateau", "plateau")
        for run, change in [
            ("baseline", {}),
            ("depth-0.1", dict(depth_multiplier=0.1)),
            ("half-layers", dict(variant="half_layers")),
            ("dropout-0.6", dict(dropout=0.6)),
            ("stochastic-depth-0.5", dict(stochastic_depth=0.5)),
            (other[1], dict(schedule=other[0])),
        ]:
            runs.append(PlannedRun("hparams", run, _config(values, out, f"hparams/{run}", image_size=small, **change)))

    if "ablation" in names:
        # The study's ablation: 50 epochs, no early stopping.
        change = dict(epochs=50, min_epochs=0, early_stop_patience=None) if preset == "blog" else {}
        for variant in ABLATION_VARIANTS:
            runs.append(PlannedRun("ablation", variant, _config(values, out, f"ablation/{variant}",
                                   image_size=small, variant=variant, **change)))

    if "progressive" in names:
        big = max(image_sizes)
        prog = ProgressiveConfig.from_preset("low-res", size_start=small, size_end=big, eval_size=big)
        runs += [
            PlannedRun("progressive", "fixed", _config(values, out, "progressive/fixed", image_size=big)),
            PlannedRun("progressive", "progressive", _config(values, out, "progressive/progressive",
                       image_size=big, progressive=prog)),
        ]
    return [r if r.recipe else replace(r, recipe=preset) for r in runs]


def run_status(run_dir: str | Path) -> str:
    """``"finished"`` (metrics.json says so), ``"interrupted"`` (started, not finished) or ``"new"``.

    >>> run_status("/nonexistent")
    'new'
    """
    run_dir = Path(run_dir)
    metrics = run_dir / SUMMARY
    if metrics.is_file():
        try:
            if json.loads(metrics.read_text()).get("status") == "finished":
                return "finished"
        except (json.JSONDecodeError, OSError):
            pass
    return "interrupted" if run_dir.exists() and any(run_dir.iterdir()) else "new"
