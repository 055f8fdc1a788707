"""`photo_size`: the study's 32x32 photos fed to the network at a larger input, end to end."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from effv2birds import Preprocessing, TrainConfig
from effv2birds.cli import build_config, build_parser
from effv2birds.data import cache_split, decode_resize, load_image_dataset
from effv2birds.data.dedup import read_train_hashes
from effv2birds.errors import ConfigError, Effv2birdsError

pytestmark = pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning")


@pytest.mark.parametrize("resize", ["resize", "resize_crop"])
def test_same_pixels_as_saving_the_small_photo_and_upsampling_it(resize, colour_photos):
    photo = PIL.Image.open(colour_photos / "train" / "Red-Bird" / "0.jpg").crop((0, 0, 48, 36))  # not square
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    small = decode_resize(buf.getvalue(), 32, resize)
    png = io.BytesIO()
    PIL.Image.fromarray(small.transpose(1, 2, 0)).save(png, "PNG")  # what a user with 32x32 files has
    assert np.array_equal(decode_resize(buf.getvalue(), 64, resize, photo_size=32), decode_resize(png.getvalue(), 64))
    # photo_size equal to the size changes nothing; a larger input really is upsampled (4 px blocks blur)
    assert np.array_equal(decode_resize(buf.getvalue(), 32, resize, photo_size=32), small)
    direct = decode_resize(buf.getvalue(), 64, resize)
    assert not np.array_equal(decode_resize(buf.getvalue(), 64, resize, photo_size=32), direct)


def test_cache_entries_are_keyed_by_photo_size(tmp_path):
    train = load_image_dataset("synthetic", synthetic_size=30)["train"]
    plain = cache_split(train, 16, cache_dir=tmp_path)
    small = cache_split(train, 16, cache_dir=tmp_path, photo_size=8)
    assert plain.path != small.path and "-from8px-" in small.path.name and "from" not in plain.path.name
    assert (plain.photo_size, small.photo_size) == (None, 8)
    assert small.images.shape == plain.images.shape and not np.array_equal(small.images, plain.images)
    assert json.loads((small.path / "effv2birds_cache.json").read_text())["photo_size"] == 8
    again = cache_split(train, 16, cache_dir=tmp_path, photo_size=8)  # reused, not rebuilt
    assert again.path == small.path and again.photo_size == 8
    same = cache_split(train, 16, cache_dir=tmp_path, photo_size=16)  # no first step: the plain entry
    assert same.path == plain.path and same.photo_size is None
    with pytest.raises(Effv2birdsError, match="photo_size=0 is not valid: an integer >= 1 or None"):
        cache_split(train, 16, cache_dir=tmp_path, photo_size=0)


def test_config_cli_and_preprocessing_record():
    assert build_config(build_parser().parse_args(["train", "--photo-size", "32", "--image-size", "64"])).photo_size == 32
    with pytest.raises(ConfigError, match="photo_size"):
        TrainConfig(photo_size=0)
    pre = Preprocessing.from_config(TrainConfig(image_size=64, photo_size=32))
    assert (pre.input_size, pre.photo_size) == (64, 32)
    assert pre.to_dict()["photo_size"] == 32 and Preprocessing.from_dict(pre.to_dict()) == pre
    assert "32 x 32 px, then to 64 x 64 px" in pre.describe()
    # runs without it keep the record they always had, and old records read as None
    plain = Preprocessing.from_config(TrainConfig(image_size=64))
    assert "photo_size" not in plain.to_dict() and Preprocessing.from_dict(plain.to_dict()).photo_size is None
    with pytest.raises(ConfigError, match="photo_size"):
        Preprocessing(input_size=64, photo_size=-1, mean=(0.5,) * 3, std=(0.5,) * 3)
    # photos of the input's size (birds128.toml's photo_size = 128): no first step, the record of a plain run
    same = Preprocessing.from_config(TrainConfig(image_size=128, photo_size=128))
    assert same == Preprocessing.from_config(TrainConfig(image_size=128)) and "then to" not in same.describe()


@pytest.mark.usefixtures("one_thread")
def test_a_run_trains_predicts_and_evaluates_the_small_photos(colour_photos, tmp_path):
    from effv2birds.training import evaluate_run, load_trained, train

    run = tmp_path / "run"
    train(TrainConfig(data=str(colour_photos), photo_size=8, image_size=32, batch_size=8, epochs=1,
                      warmup_epochs=0, val_fraction=0.25, width_multiplier=0.25, depth_multiplier=0.1,
                      progress_bar=False, log_with="none", cpu=True, cache_dir=str(tmp_path / "cache"),
                      output_dir=str(run)))
    predictor = load_trained(run)
    assert predictor.preprocessing.photo_size == 8  # from the weights' metadata
    photo = colour_photos / "test" / "Red-Bird" / "0.jpg"
    got = predictor.load_image(photo)
    assert np.array_equal(got.numpy(), decode_resize(photo, 32, photo_size=8))
    # evaluate caches the photos the same way (no cache entry without "from8px"), so its figures are the
    # run's own test figures
    result = evaluate_run(run, colour_photos, split="test", cache_dir=tmp_path / "cache", cpu=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert result["top1"] == pytest.approx(metrics["test"]["top1"])
    entries = [p.parent.name for p in (tmp_path / "cache").glob("*/effv2birds_cache.json")]
    assert entries and all("-from8px-" in name for name in entries), entries
    # the leak check hashes the photos as the run's training hashes were made (from the 8 px photos)
    assert result["leak_check"]["status"] == "done"
    assert read_train_hashes(run)[2]["photo_size"] == 8


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name, extra, photo_and_input", [
    ("birds32.toml", [], (32, 64)),
    # fp32: on a CPU without bf16 instructions the file's bf16 is emulated, ~12x slower
    ("birds128.toml", ["--mixed-precision", "no"], (None, 128)),
])
def test_the_example_configs_run_a_few_steps(name, extra, photo_and_input, shared_data, tmp_path):
    """examples/configs/birds32.toml and birds128.toml as README gives them, cut to 3 steps on a sample of the
    real photos."""
    from effv2birds.cli import main
    from effv2birds.training import load_trained

    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / name
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--data", str(shared_data / "birds25-mini"), "--max-samples", "300",
                 "--max-steps", "3", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress-bar", "--log-with", "none", "--cpu", *extra])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["global_steps"] == 3
    pre = load_trained(out).preprocessing
    assert (pre.photo_size, pre.input_size) == photo_and_input
