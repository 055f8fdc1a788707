"""What can be checked without the data is checked before any photo is decoded or cached: model name,
backend/variant, weights file, tracker package, output directory, resume checkpoint."""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")

from effv2birds import ConfigError, TrainConfig, WeightsError, WeightsNotFoundError
from effv2birds.cli import main
from effv2birds.models import ModelConfigError, build_model
from effv2birds.training import CheckpointError, train


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """A real photo folder (2 classes) whose loading and caching are watched: any call is recorded
    and fails the run, and its cache folder must stay empty."""
    from effv2birds import data

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for cls in ("crow", "myna"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            PIL.Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    touched = []

    def watch(name):
        def call(*args, **kwargs):
            touched.append(name)
            raise AssertionError(f"{name} was called: the data was touched before the config was checked")
        return call

    monkeypatch.setattr(data, "load_image_dataset", watch("load_image_dataset"))
    monkeypatch.setattr(data, "cache_split", watch("cache_split"))
    cache = tmp_path / "cache"
    cache.mkdir()
    yield dict(data=str(root), cache_dir=str(cache), touched=touched)
    assert touched == [] and list(cache.iterdir()) == []


def _config(tmp_path, photos, **changes):
    base = dict(data=photos["data"], cache_dir=photos["cache_dir"], output_dir=str(tmp_path / "run"),
                width_multiplier=0.25, depth_multiplier=0.1, image_size=32, log_with="none", progress_bar=False,
                cpu=True, max_steps=2)
    return TrainConfig(**{**base, **changes})


def _other_architecture_file(path: Path) -> str:
    model = build_model("timm/tf_efficientnetv2_s", num_classes=2, width_multiplier=0.25, depth_multiplier=0.1)
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.mark.parametrize("changes, error, message", [
    (dict(model="resnet50"), ModelConfigError, "unknown model 'resnet50'"),
    (dict(model="timm/efficientnetv2_rw_s", variant="all_fused"), ModelConfigError, "supports only variant='default'"),
    (dict(weights="missing.safetensors"), WeightsNotFoundError, "does not exist"),
    (dict(weights="other.pth"), WeightsError, "does not fit this EfficientNet"),
    (dict(output_dir="a-file/run"), ConfigError, "is a file, not a folder"),
    (dict(resume="no-such-checkpoint"), CheckpointError, "does not exist"),
], ids=["model-name", "timm-variant", "weights-missing", "weights-other-architecture", "output-dir", "resume"])
def test_config_errors_come_before_any_photo_is_decoded(tmp_path, photos, changes, error, message):
    for key in ("weights", "output_dir", "resume"):
        if key in changes:
            changes[key] = str(tmp_path / changes[key])
    if changes.get("weights", "").endswith("other.pth"):
        _other_architecture_file(tmp_path / "other.pth")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(error, match=message):
        train(_config(tmp_path, photos, **changes))
    assert not (tmp_path / "run").exists()  # nothing was written either


def test_pretrained_weights_missing_offline_fail_before_the_data(tmp_path, photos, monkeypatch):
    monkeypatch.setenv("EFFV2BIRDS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached ImageNet weights
    cfg = _config(tmp_path, photos, pretrained=True, width_multiplier=1.0, depth_multiplier=1.0)
    with pytest.raises(WeightsNotFoundError, match="not cached and could not be downloaded"):
        train(cfg)


def test_missing_tracker_package_fails_before_the_data(tmp_path, photos, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_mlflow_available", lambda: False)
    with pytest.raises(ConfigError, match=r"needs the mlflow package.*pip install 'effv2birds\[mlflow\]'"):
        train(_config(tmp_path, photos, log_with="mlflow"))


def test_cli_rejects_a_wrong_model_before_the_data(tmp_path, photos, capsys):
    code = main(["train", "--model", "resnet50", "--data", photos["data"], "--cache-dir", photos["cache_dir"],
                 "--output-dir", str(tmp_path / "run"), "--log-with", "none", "--no-progress-bar"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown model 'resnet50'" in err and "Traceback" not in err


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root may write into read-only folders")
def test_a_read_only_output_dir_fails_before_the_data(tmp_path, photos):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            train(_config(tmp_path, photos, output_dir=str(locked / "run")))
    finally:
        locked.chmod(0o700)
