"""Pretrained-weight loading through the real code path, with weight files the tests write themselves."""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors.torch import save_file

from effv2birds.models import (ModelConfigError, WeightsError, WeightsNotFoundError, build_model, read_state_dict)
from effv2birds.models import weights as weights_mod

TV_FILE = "efficientnet_v2_s-dd5fe13b.pth"
TIMM_REPO_DIR = "models--timm--tf_efficientnetv2_s.in21k_ft_in1k"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random torchvision efficientnet_v2_s (.pth) and timm tf_efficientnetv2_s (.safetensors, wrapped .pth)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("weights")
    tv = build_model(num_classes=1000).state_dict()
    torch.save(tv, root / TV_FILE)
    tm = build_model("timm/tf_efficientnetv2_s", num_classes=1000).state_dict()
    save_file(tm, str(root / "model.safetensors"))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tm.items()}}, root / "timm_ckpt.pth")
    return dict(root=root, tv=tv, timm=tm)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point torch hub and the HF hub cache at empty folders; never touch the user's real caches."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for var in ("EFFV2BIRDS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _same(a: dict, b: dict, skip: str) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if not k.startswith(skip))


def test_torchvision_file_loads_backbone_and_fresh_head(files):
    model = build_model(num_classes=25, weights=str(files["root"] / TV_FILE))
    state = model.state_dict()
    assert _same(state, files["tv"], skip="classifier.")
    assert state["classifier.1.weight"].shape == (25, 1280)
    # the 1000-class ImageNet head is not squeezed in; with 1000 classes it is loaded too
    full = build_model(num_classes=1000, weights=files["root"] / TV_FILE).state_dict()
    assert _same(full, files["tv"], skip="__none__")


def test_timm_safetensors_and_wrapped_checkpoint_load(files):
    for name in ("model.safetensors", "timm_ckpt.pth"):
        model = build_model("timm/tf_efficientnetv2_s", num_classes=25, weights=str(files["root"] / name))
        state = model.state_dict()
        assert _same(state, files["timm"], skip="classifier.")
        assert state["classifier.weight"].shape == (25, 1280)


@pytest.mark.parametrize("backend,stem", [("torchvision", "features.0.0.weight"), ("timm", "conv_stem.weight")])
def test_one_channel_stem_sums_rgb_weights(files, backend, stem):
    name, source = ("torchvision/efficientnet_v2_s", files["root"] / TV_FILE) if backend == "torchvision" else \
        ("timm/tf_efficientnetv2_s", files["root"] / "model.safetensors")
    source_state = files["tv"] if backend == "torchvision" else files["timm"]
    model = build_model(name, num_classes=10, in_chans=1, weights=str(source))
    assert torch.allclose(model.state_dict()[stem], source_state[stem].sum(1, keepdim=True))
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_torch_hub_cache_is_used_for_pretrained(files, empty_caches):
    ckpt = empty_caches / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    os.symlink(files["root"] / TV_FILE, ckpt / TV_FILE)
    model = build_model(num_classes=25, pretrained=True)
    assert _same(model.state_dict(), files["tv"], skip="classifier.")


def test_hf_cache_is_used_for_timm_pretrained(files, empty_caches):
    repo = empty_caches / "hf" / TIMM_REPO_DIR
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    os.symlink(files["root"] / "model.safetensors", snap / "model.safetensors")
    start = time.monotonic()
    model = build_model("timm/tf_efficientnetv2_s", num_classes=25, pretrained=True)
    assert time.monotonic() - start < 30
    assert _same(model.state_dict(), files["timm"], skip="classifier.")


def test_wrong_architecture_gives_a_clear_error(files, tmp_path):
    with pytest.raises(WeightsError, match="looks like timm EfficientNet") as err:
        build_model(num_classes=25, weights=str(files["root"] / "model.safetensors"))
    assert len(str(err.value)) < 1500  # a summary, not a load_state_dict dump
    with pytest.raises(WeightsError, match="looks like torchvision EfficientNet"):
        build_model("timm/tf_efficientnetv2_s", weights=str(files["root"] / TV_FILE))
    # the same family but another size (a depth-0.1 model's weights into the full model)
    small = tmp_path / "small.pth"
    torch.save(build_model(depth_multiplier=0.1).state_dict(), small)
    with pytest.raises(WeightsError, match="missing from the file"):
        build_model(weights=str(small))


@pytest.mark.parametrize("backend", ["torchvision", "timm"])
def test_a_trained_variant_reloads_from_its_own_file(tmp_path, backend):
    """weights= accepts any architecture built here (e.g. a run's saved all_fused depth-0.1 model)."""
    model = {"torchvision": "torchvision/efficientnet_v2_s", "timm": "timm/efficientnetv2_s"}[backend]
    kwargs = dict(name=model, variant="all_fused", depth_multiplier=0.1, num_classes=25, in_chans=1)
    trained = build_model(**kwargs)
    path = tmp_path / "best.safetensors"
    save_file(trained.state_dict(), str(path))
    again = build_model(**kwargs, weights=str(path))
    assert _same(again.state_dict(), trained.state_dict(), skip="__none__")
    with pytest.raises(WeightsError, match="variant"):
        build_model(**{**kwargs, "variant": "four_stage"}, weights=str(path))


@pytest.mark.parametrize("source", [TV_FILE, "model.safetensors"])
def test_truncated_file_gives_a_clear_error(files, tmp_path, source):
    data = (files["root"] / source).read_bytes()
    broken = tmp_path / source
    broken.write_bytes(data[: len(data) // 3])
    name = "torchvision/efficientnet_v2_s" if source == TV_FILE else "timm/tf_efficientnetv2_s"
    with pytest.raises(WeightsError, match="truncated"):
        build_model(name, num_classes=25, weights=str(broken))
    assert broken.stat().st_size == len(data) // 3  # the user's file is left as it was


def test_files_that_are_not_weights(tmp_path):
    torch.save(["not", "a", "state dict"], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        read_state_dict(tmp_path / "list.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(WeightsError, match="could not be read"):
        build_model(weights=str(tmp_path / "text.pth"))
    with pytest.raises(WeightsNotFoundError, match="does not exist") as err:
        build_model(weights=str(tmp_path / "missing.pth"))
    assert isinstance(err.value, FileNotFoundError)


def _network_up() -> bool:
    return weights_mod._unreachable("https://download.pytorch.org") is None


@pytest.mark.parametrize("name,expected", [
    ("torchvision/efficientnet_v2_s", TV_FILE),
    ("timm/tf_efficientnetv2_s", "models--timm--tf_efficientnetv2_s.in21k_ft_in1k"),
])
def test_offline_with_nothing_cached_fails_fast_and_says_what_to_do(empty_caches, name, expected):
    if _network_up():
        pytest.skip("the network is reachable here; the offline failure path cannot be exercised")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as err:
        build_model(name, num_classes=25, pretrained=True)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert expected in message and str(empty_caches) in message and "weights=" in message
    checkpoints = empty_caches / "torch" / "hub" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # no partial download left behind


@pytest.mark.parametrize("var", ["EFFV2BIRDS_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_flags_skip_the_network(empty_caches, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    monkeypatch.setattr(weights_mod, "_unreachable", lambda url: pytest.fail("network probed in offline mode"))
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError, match="offline mode"):
        build_model("timm/tf_efficientnetv2_s.in1k", pretrained=True)
    assert time.monotonic() - start < 5


def test_timm_model_without_pretrained_weights_says_which_have_them(empty_caches):
    with pytest.raises(ModelConfigError, match="tf_efficientnetv2_s.in21k_ft_in1k"):
        build_model("timm/efficientnetv2_s", pretrained=True)


def test_weights_folder_with_a_safetensors_file(files, tmp_path):
    folder = tmp_path / "snapshot"
    folder.mkdir()
    os.symlink(files["root"] / "model.safetensors", folder / "model.safetensors")
    model = build_model("timm/tf_efficientnetv2_s", weights=str(folder))
    assert _same(model.state_dict(), files["timm"], skip="__none__")
    with pytest.raises(WeightsNotFoundError, match="model.safetensors"):
        build_model("timm/tf_efficientnetv2_s", weights=str(tmp_path))
