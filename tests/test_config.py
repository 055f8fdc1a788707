"""The configuration dataclasses: validation messages, file round trips, precedence."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from effv2birds.config import ConfigError, ProgressiveConfig, TrainConfig, parse_value, resolve_config


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(image_size=0), ["image_size", "0", "> 0"]),
        (dict(optimizer="lamb"), ["optimizer", "lamb", "adamw", "sgd"]),
        (dict(mixed_precision="fp8"), ["mixed_precision", "fp8", "bf16"]),
        (dict(val_fraction=0.6, test_fraction=0.5), ["val_fraction", "test_fraction", "< 1"]),
        (dict(label_smoothing=1.5), ["label_smoothing", "1.5", "[0, 1)"]),
        (dict(min_epochs=10, epochs=5), ["min_epochs", "epochs"]),
        (dict(freeze_backbone=True), ["freeze_backbone", "pretrained"]),
        (dict(ema_decay=1.0), ["ema_decay", "(0, 1)"]),
        (dict(bn_momentum=0.0), ["bn_momentum", "0.0", "(0, 1)"]),
        (dict(ema_bn_images=-1), ["ema_bn_images", "-1", "integer >= 0"]),
        (dict(ema_bn_images=16), ["ema_bn_images=16", "no effect without ema_decay", "--ema-decay"]),
        (dict(lr=float("nan")), ["lr", "nan"]),
        (dict(batch_size=True), ["batch_size", "True"]),
    ],
)
def test_bad_values_name_field_value_and_choices(kwargs, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_progressive_validation_and_presets():
    with pytest.raises(ConfigError, match="stages"):
        ProgressiveConfig(stages=1)
    with pytest.raises(ConfigError, match="stochastic_depth_start"):
        ProgressiveConfig(stages=4, stochastic_depth_start=0.1)
    with pytest.raises(ConfigError, match="paper-s"):
        ProgressiveConfig.from_preset("nope")
    paper = ProgressiveConfig.from_preset("paper-s")
    assert (paper.stages, paper.size_start, paper.size_end, paper.randaug_end, paper.eval_size) == (4, 128, 300, 15, 384)
    assert not ProgressiveConfig().enabled and paper.enabled


def test_eval_size_precedence():
    assert TrainConfig(image_size=64).eval_size == 64
    prog = ProgressiveConfig.from_preset("low-res")
    assert TrainConfig(image_size=64, progressive=prog).eval_size == 128
    assert TrainConfig(image_size=64, progressive=prog, eval_image_size=96).eval_size == 96


def test_toml_and_json_round_trip(tmp_path):
    cfg = TrainConfig(data="x", image_size=128, grad_clip=1.0, progressive=ProgressiveConfig.from_preset("paper-s"))
    cfg.save(tmp_path)
    assert TrainConfig.from_file(tmp_path / "config.toml") == cfg
    assert TrainConfig.from_file(tmp_path / "config.json") == cfg
    assert json.loads((tmp_path / "config.json").read_text())["progressive"]["size_end"] == 300


def test_file_then_overrides_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('epochs = 7\nlr = 0.01\n[progressive]\npreset = "low-res"\nsize_end = 96\n')
    cfg = TrainConfig.from_file(path, lr=0.5)
    assert (cfg.epochs, cfg.lr) == (7, 0.5)
    assert cfg.progressive.size_start == 32 and cfg.progressive.size_end == 96


def test_unknown_keys_and_bad_files_are_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochz = 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        TrainConfig.from_file(path)
    path.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="could not be parsed"):
        TrainConfig.from_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "missing.toml")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_import_has_no_heavy_side_effects():
    code = "import sys, effv2birds; from effv2birds import TrainConfig; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_public_name_resolves():
    import effv2birds

    missing = [name for name in effv2birds.__all__ if getattr(effv2birds, name, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        effv2birds.nope  # noqa: B018


EXAMPLE_CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


@pytest.mark.parametrize("name, preset, extra", [
    # the preset at photo size 32 is the 32 px recipe: its input size and epochs come from the preset
    ("birds32.toml", "ours", dict(data="../shared/data/birds25-mini", photo_size=32, output_dir="runs/birds32")),
    # and at photo size 128 the 128 px recipe (mixup / cutmix, weight decay 0.5, 80 epochs)
    ("birds128.toml", "ours", dict(data="../shared/data/birds25-mini", photo_size=128, mixed_precision="bf16",
                                   output_dir="runs/birds128")),
    ("blog.toml", "blog", dict(data="synthetic", image_size=32, output_dir="runs/blog")),
])
def test_example_configs_spell_out_the_presets(name, preset, extra):
    """The TOML examples are the presets written out: a change to one without the other fails here."""
    assert TrainConfig.from_file(EXAMPLE_CONFIGS / name) == resolve_config(preset=preset, overrides=extra)


def test_one_precedence_defaults_preset_file_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('lr = 0.5\nbatch_size = 64\n[progressive]\npreset = "low-res"\nstages = 2\n')
    cfg = resolve_config(preset="blog", config_file=path, overrides={"batch_size": 8, "max_steps": None})
    assert (cfg.optimizer, cfg.lr, cfg.batch_size) == ("adam", 0.5, 8)  # preset < file < overrides
    assert (cfg.progressive.stages, cfg.progressive.size_end) == (2, 128)  # the file's preset, one value changed
    assert cfg.epochs == 350 and cfg.label_smoothing == 0.0  # keys the file does not set keep the preset's
    assert TrainConfig.from_file(path, lr=0.1) == resolve_config(config_file=path, overrides={"lr": 0.1})
    with pytest.raises(ConfigError, match="preset 'nope' is unknown; choose one of quick, blog, ours, full"):
        resolve_config(preset="nope")


def test_a_preset_trains_photos_of_one_size_with_its_values_for_that_size_below_file_and_flags(tmp_path):
    """``ours`` at photo size 32 is the 32 px recipe (64 px input, 32 epochs); the size may come from any layer,
    and what a file or flag sets still wins."""
    from effv2birds.cli import build_config, build_parser

    ours32 = resolve_config(preset="ours", overrides={"photo_size": 32})
    assert (ours32.photo_size, ours32.image_size, ours32.epochs, ours32.lr) == (32, 64, 32, 1e-3)
    assert ours32 == build_config(build_parser().parse_args(["train", "--preset", "ours", "--photo-size", "32"]))
    path = tmp_path / "c.toml"
    path.write_text("photo_size = 32\nepochs = 7\n")
    from_file = resolve_config(preset="ours", config_file=path)
    assert (from_file.image_size, from_file.epochs) == (64, 7)  # the size from the file; its epochs beat the preset's
    flagged = resolve_config(preset="ours", config_file=path, overrides={"image_size": 96, "photo_size": 32})
    assert (flagged.image_size, flagged.epochs) == (96, 7)
    other = [resolve_config(preset="ours", overrides=o) for o in ({}, {"photo_size": 48}, {"image_size": 32})]
    assert [(c.image_size, c.epochs) for c in other] == [(TrainConfig.image_size, 40), (TrainConfig.image_size, 40), (32, 40)]
    assert resolve_config(preset="blog", overrides={"photo_size": 32}).epochs == 350  # only where a preset has values
    assert resolve_config(overrides={"photo_size": 32}).epochs == TrainConfig.epochs


def test_set_values_parse_like_flags():
    from effv2birds.cli import build_config, build_parser

    flags = build_config(build_parser().parse_args(
        ["train", "--preset", "ours", "--epochs", "5", "--no-hflip", "--eval-image-size", "none", "--loss", "cosine"]))
    sets = resolve_config(preset="ours", overrides={k: parse_value(k, v) for k, v in
                          [("epochs", "5"), ("hflip", "no"), ("eval_image_size", "none"), ("loss", "cosine")]})
    assert flags == sets and flags.optimizer == "adamw" and flags.loss == "cosine"
    with pytest.raises(ConfigError, match="epochs='five' is not valid: not a int"):
        parse_value("epochs", "five")
    with pytest.raises(ConfigError, match="unknown TrainConfig option 'epoch'"):
        parse_value("epoch", "5")


def test_a_run_saved_before_ema_bn_images_was_refused_without_ema_decay_still_loads(tmp_path):
    """Such a value had no effect, so the saved run is read without it by every reader of saved runs
    (evaluate, compare, the study's stale-run check, resume), while a new config with it is refused."""
    import json

    from effv2birds.study.runner import saved_values

    values = {**TrainConfig(epochs=3).to_dict(), "ema_bn_images": 16}
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(ConfigError, match="no effect without ema_decay"):
        TrainConfig.from_dict(values)
    cfg = TrainConfig.from_saved(tmp_path / "config.json")
    assert (cfg.epochs, cfg.ema_decay, cfg.ema_bn_images) == (3, None, TrainConfig.ema_bn_images)
    assert TrainConfig.from_saved(tmp_path) == cfg  # the run folder reads its config.json
    assert saved_values(tmp_path / "config.json")["ema_bn_images"] == TrainConfig.ema_bn_images
    kept = {**values, "ema_decay": 0.99}  # with an EMA the value was used: kept as saved
    assert TrainConfig.from_saved(kept).ema_bn_images == 16
