"""get_transforms: bit-identical to torchvision's weights transforms, timm configs, train path, JSON form."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import EfficientNet_V2_S_Weights

from effv2birds.models import ModelTransforms, get_transforms
from effv2birds.models import transforms as transforms_mod

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_warning_state(monkeypatch):
    monkeypatch.setattr(transforms_mod, "_WARNED", set())
    torch.manual_seed(0)


def _photo(width=300, height=220, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth gradients plus noise: resampling differences would show up in every pixel
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 127 // (width + height))], -1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _to_uint8(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def test_eval_is_identical_to_torchvision_default_weights_transforms():
    ours = get_transforms(pretrained=True).eval
    ref = EfficientNet_V2_S_Weights.DEFAULT.transforms()
    img = _photo()
    assert torch.equal(ours(img), ref(img))  # PIL
    chw = _to_uint8(img)
    assert torch.equal(ours(chw), ref(chw))  # (C,H,W) uint8
    batch = torch.stack([chw, _to_uint8(_photo(seed=1))])
    out = ours(batch)
    assert out.shape == (2, 3, 384, 384) and out.dtype == torch.float32
    assert torch.equal(out, ref(batch))  # (B,C,H,W) uint8
    assert (ours(chw) - ref(chw)).abs().max().item() == 0.0


def test_eval_matches_on_a_real_photo():
    photos = sorted((DATA / "birds25-mini" / "test").glob("*/*.jpg"))[:1] if DATA.is_dir() else []
    if not photos:
        pytest.skip(f"real test photos not found under {DATA}")
    img = Image.open(photos[0]).convert("RGB")
    ours, ref = get_transforms(pretrained=True).eval, EfficientNet_V2_S_Weights.DEFAULT.transforms()
    assert torch.equal(ours(img), ref(img))
    assert torch.equal(ours(_to_uint8(img)), ref(_to_uint8(img)))


def test_settings_come_from_the_weights():
    tv = get_transforms()
    meta = EfficientNet_V2_S_Weights.DEFAULT
    assert tv.mean == tuple(meta.transforms().mean) and tv.min_size == meta.meta["min_size"][0] == 33
    tf = get_transforms("tf_efficientnetv2_s.in21k_ft_in1k")
    assert tf.mean == tf.std == (0.5, 0.5, 0.5)
    assert (tf.crop_size, tf.interpolation) == (300, "bicubic")
    rw = get_transforms("timm:efficientnetv2_rw_s")
    assert rw.mean == pytest.approx((0.485, 0.456, 0.406)) and rw.crop_size == 288
    assert get_transforms("efficientnet_v2_s", backend="timm").std == pytest.approx((0.229, 0.224, 0.225))


def test_tf_normalisation_maps_pixels_to_minus_one_one():
    t = get_transforms("tf_efficientnetv2_s", image_size=64)
    white = torch.full((3, 64, 64), 255, dtype=torch.uint8)
    black = torch.zeros(3, 64, 64, dtype=torch.uint8)
    assert torch.allclose(t.eval(white), torch.ones(3, 64, 64)) and torch.allclose(t.eval(black), -torch.ones(3, 64, 64))


def test_image_size_sets_the_model_input():
    t = get_transforms(pretrained=True, image_size=48)
    out = t.eval(_photo())
    assert out.shape == (3, 48, 48)
    timm_t = get_transforms("efficientnetv2_s", image_size=100)
    assert timm_t.crop_size == 100 and timm_t.eval_size == 100  # crop_pct 1.0


def test_warns_once_below_the_minimum_size():
    # a transform restored from JSON (never made by get_transforms) warns on first use
    restored = ModelTransforms.from_dict(dict(mean=[0.5] * 3, std=[0.5] * 3, eval_size=24, crop_size=24))
    with pytest.warns(UserWarning, match="24 px"):
        restored.eval(torch.zeros(3, 30, 30, dtype=torch.uint8))

    img = _to_uint8(_photo(64, 64))
    with pytest.warns(UserWarning, match="33 px") as record:
        t = get_transforms(pretrained=True, image_size=32)
        assert t.eval(img).shape == (3, 32, 32)
    assert len([w for w in record if "33 px" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.eval(img)
        t.train(img)
        get_transforms(image_size=40).eval(img)  # at/above the minimum: silent
        get_transforms(image_size=32)  # from scratch: the weights' minimum does not apply


def test_train_transform_on_every_input_kind():
    t = get_transforms(pretrained=True, image_size=64)
    img = _photo()
    assert t.train(img).shape == (3, 64, 64)
    chw = _to_uint8(img)
    out = t.train(chw)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and type(out) is torch.Tensor
    batch = torch.stack([chw] * 4)
    outs = t.train(batch)
    assert outs.shape == (4, 3, 64, 64)
    # each image of a batch gets its own random crop
    assert not all(torch.equal(outs[0], outs[i]) for i in range(1, 4))
    # the same normalisation as eval: a flat grey image stays flat and equal to eval's value
    grey = torch.full((3, 80, 80), 128, dtype=torch.uint8)
    assert torch.allclose(t.train(grey), t.eval(grey), atol=1e-6)


def test_round_trip_through_json():
    t = get_transforms("tf_efficientnetv2_s", image_size=56)
    text = json.dumps(t.to_dict())
    back = ModelTransforms.from_dict(json.loads(text))
    assert back == t and back.to_dict() == t.to_dict()
    img = _to_uint8(_photo())
    assert torch.equal(back.eval(img), t.eval(img))


@pytest.mark.parametrize("kwargs,match", [
    (dict(interpolation="lanczos5"), "interpolation"),
    (dict(std=(0.0, 1.0, 1.0)), "std"),
    (dict(crop_size=500), "crop_size"),
])
def test_bad_settings_are_rejected(kwargs, match):
    base = dict(mean=(0.5,) * 3, std=(0.5,) * 3, eval_size=64, crop_size=64)
    with pytest.raises(ValueError, match=match):
        ModelTransforms(**{**base, **kwargs})
    with pytest.raises(ValueError, match="unknown ModelTransforms field"):
        ModelTransforms.from_dict({**base, "colour": 1})
    with pytest.raises(ValueError, match="image_size"):
        get_transforms(image_size=0)
