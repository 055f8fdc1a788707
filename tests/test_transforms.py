"""get_transforms: bit-identical to torchvision's weights transforms, timm configs, JSON form; the deprecated
train path and old names. Preprocessing: one run's preprocessing, its saved forms old and new, and that it
computes what the code it replaces computed."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import EfficientNet_V2_S_Weights

from effv2birds import TrainConfig
from effv2birds.data import BatchAugment, DataError, decode_resize, to_model_input
from effv2birds.models import ModelTransforms, get_transforms
from effv2birds.models import transforms as transforms_mod
from effv2birds.preprocessing import Preprocessing

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
    tf = get_transforms("timm/tf_efficientnetv2_s.in21k_ft_in1k")
    assert tf.mean == tf.std == (0.5, 0.5, 0.5)
    assert (tf.crop_size, tf.interpolation) == (300, "bicubic")
    rw = get_transforms("timm/efficientnetv2_rw_s")
    assert rw.mean == pytest.approx((0.485, 0.456, 0.406)) and rw.crop_size == 288
    assert get_transforms("timm/efficientnetv2_s").std == pytest.approx((0.229, 0.224, 0.225))


def test_tf_normalisation_maps_pixels_to_minus_one_one():
    t = get_transforms("timm/tf_efficientnetv2_s", image_size=64)
    white = torch.full((3, 64, 64), 255, dtype=torch.uint8)
    black = torch.zeros(3, 64, 64, dtype=torch.uint8)
    assert torch.allclose(t.eval(white), torch.ones(3, 64, 64)) and torch.allclose(t.eval(black), -torch.ones(3, 64, 64))


def test_image_size_sets_the_model_input():
    t = get_transforms(pretrained=True, image_size=48)
    out = t.eval(_photo())
    assert out.shape == (3, 48, 48)
    timm_t = get_transforms("timm/efficientnetv2_s", image_size=100)
    assert timm_t.crop_size == 100 and timm_t.resize_size == 100  # crop_pct 1.0


def test_warns_once_below_the_minimum_size():
    # a transform restored from JSON (never made by get_transforms) warns on first use
    restored = ModelTransforms.from_dict(dict(mean=[0.5] * 3, std=[0.5] * 3, resize_size=24, crop_size=24))
    with pytest.warns(UserWarning, match="24 px"):
        restored.eval(torch.zeros(3, 30, 30, dtype=torch.uint8))

    img = _to_uint8(_photo(64, 64))
    with pytest.warns(UserWarning, match="33 px") as record:
        t = get_transforms(pretrained=True, image_size=32)
        assert t.eval(img).shape == (3, 32, 32)
    assert len([w for w in record if "33 px" in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "ModelTransforms.train is deprecated", DeprecationWarning)
        t.eval(img)
        t.train(img)
        get_transforms(image_size=40).eval(img)  # at/above the minimum: silent
        get_transforms(image_size=32)  # from scratch: the weights' minimum does not apply


@pytest.mark.filterwarnings("ignore:ModelTransforms.train is deprecated:DeprecationWarning")
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
    t = get_transforms("timm/tf_efficientnetv2_s", image_size=56)
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
    base = dict(mean=(0.5,) * 3, std=(0.5,) * 3, resize_size=64, crop_size=64)
    with pytest.raises(ValueError, match=match):
        ModelTransforms(**{**base, **kwargs})
    with pytest.raises(ValueError, match="unknown ModelTransforms field"):
        ModelTransforms.from_dict({**base, "colour": 1})
    with pytest.raises(ValueError, match="image_size"):
        get_transforms(image_size=0)


# --- old names -----------------------------------------------------------------------------------------
def test_old_eval_size_name_still_works_with_a_deprecation_warning():
    with pytest.deprecated_call(match="resize_size"):
        t = ModelTransforms(mean=(0.5,) * 3, std=(0.5,) * 3, eval_size=40, crop_size=32)
    assert t.resize_size == 40 and "eval_size" not in t.to_dict()
    with pytest.deprecated_call(match="resize_size"):
        assert t.eval_size == 40
    with pytest.raises(ValueError, match="disagree"), pytest.deprecated_call():
        ModelTransforms(mean=(0.5,) * 3, std=(0.5,) * 3, eval_size=40, resize_size=48, crop_size=32)
    # what runs saved as "transforms": eval_size, and train settings that training never used
    saved = dict(mean=[0.5] * 3, std=[0.5] * 3, eval_size=56, crop_size=56, interpolation="bicubic", min_size=33,
                 train_scale=[0.08, 1.0], hflip=True, source="timm tf_efficientnetv2_s.in21k_ft_in1k")
    assert ModelTransforms.from_dict(saved) == get_transforms("timm/tf_efficientnetv2_s", image_size=56)
    assert set(get_transforms().to_dict()) == {"mean", "std", "resize_size", "crop_size", "interpolation", "min_size",
                                               "source"}


def test_train_transform_is_deprecated():
    with pytest.deprecated_call(match="BatchAugment"):
        get_transforms(image_size=40).train(_to_uint8(_photo(64, 64)))


# --- Preprocessing -------------------------------------------------------------------------------------
# the study's three kinds of runs: from scratch (not normalised), its recipe, the pretrained weights' own
CONFIGS = [
    dict(image_size=32, normalize=False),
    dict(model="timm/tf_efficientnetv2_s", image_size=32, eval_image_size=40),
    dict(image_size=48, resize="resize_crop", normalize=True, pretrained=True),
]


def _what_train_recorded(cfg: TrainConfig) -> tuple[dict, dict]:
    """The metadata entries train() wrote before Preprocessing: trainer.py's lines, as they were."""
    transforms = get_transforms(cfg.model, backend=cfg.backend, pretrained=cfg.pretrained, weights=cfg.weights,
                                image_size=cfg.eval_size)
    mean, std = transforms.mean, transforms.std
    old_transforms = dict(mean=list(mean), std=list(std), eval_size=transforms.resize_size,
                          crop_size=transforms.crop_size, interpolation=transforms.interpolation,
                          min_size=transforms.min_size, train_scale=[0.08, 1.0], hflip=True, source=transforms.source)
    preprocessing = {"image_size": cfg.eval_size, "resize": cfg.resize, "mean": list(mean), "std": list(std),
                     "normalize": cfg.normalize}
    return old_transforms, preprocessing


@pytest.mark.parametrize("overrides", CONFIGS, ids=["scratch", "timm", "pretrained"])
def test_from_config_records_what_training_recorded(overrides):
    cfg = TrainConfig(**overrides)
    pre = Preprocessing.from_config(cfg)
    old_transforms, old = _what_train_recorded(cfg)
    saved = pre.to_dict()
    assert {k: saved[k] for k in old} == old  # the same keys, the same numbers
    assert saved["mean_std_source"] == old_transforms["source"] != ""
    assert pre.input_size == cfg.eval_size and pre.resize == cfg.resize and pre.normalize is cfg.normalize
    assert Preprocessing.from_dict(json.loads(json.dumps(saved))) == pre
    # the metadata of runs saved so far: both entries, and the oldest form without resize/normalize
    assert Preprocessing.from_meta({"preprocessing": old, "transforms": old_transforms}) == pre
    assert Preprocessing.from_meta({"preprocessing": saved}) == pre
    oldest = {k: old[k] for k in ("image_size", "mean", "std")}
    assert Preprocessing.from_dict(oldest) == Preprocessing(input_size=cfg.eval_size, mean=pre.mean, std=pre.std)


def test_load_image_and_model_input_are_the_functions_they_replace(tmp_path):
    img = _photo()
    img.save(tmp_path / "p.jpg", quality=90)
    for resize in ("resize", "resize_crop"):
        for normalize in (True, False):
            pre = Preprocessing(input_size=40, resize=resize, normalize=normalize, mean=(0.485, 0.456, 0.406),
                                std=(0.229, 0.224, 0.225))
            saved = pre.to_dict()  # what Predictor used to read
            for source in (img, tmp_path / "p.jpg", (tmp_path / "p.jpg").read_bytes()):
                image = pre.load_image(source)
                assert image.dtype == torch.uint8
                assert torch.equal(image, torch.from_numpy(decode_resize(source, saved["image_size"], saved["resize"])))
            batch = torch.stack([image, pre.load_image(_photo(seed=3))])
            for channels_last in (False, True):
                want = to_model_input(batch, mean=tuple(saved["mean"]), std=tuple(saved["std"]),
                                      normalize=bool(saved["normalize"]), channels_last=channels_last)
                got = pre.to_model_input(batch, channels_last=channels_last)
                assert torch.equal(got, want) and got.is_contiguous(
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_batch_augment_from_preprocessing_is_the_old_constructor():
    pre = Preprocessing.from_config(TrainConfig(model="timm/tf_efficientnetv2_s"))
    kwargs = dict(random_crop="pad", crop_padding=4, hflip=True, auto_augment="randaugment", mixup_alpha=0.2)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(8) % 5
    outputs = []
    for aug in (BatchAugment(5, mean=pre.mean, std=pre.std, normalize=pre.normalize, **kwargs),
                BatchAugment.from_preprocessing(pre, 5, **kwargs)):
        torch.manual_seed(1)
        outputs.append(aug(images, labels))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    with pytest.raises(DataError, match="normalize come"):
        BatchAugment.from_preprocessing(pre, 5, normalize=False)


@pytest.mark.parametrize("kwargs,match", [
    (dict(input_size=0), "input_size"),
    (dict(input_size=True), "input_size"),
    (dict(resize="crop"), "resize"),
    (dict(normalize="yes"), "normalize"),
    (dict(std=(0.0, 1.0, 1.0)), "std"),
    (dict(mean=(0.5, 0.5)), "mean"),
])
def test_bad_preprocessing_is_rejected(kwargs, match):
    base = dict(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ValueError, match=match):
        Preprocessing(**{**base, **kwargs})


def test_preprocessing_records_are_checked_and_dict_access_is_deprecated():
    pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['interpolation'\]"):
        Preprocessing.from_dict({**pre.to_dict(), "interpolation": "bicubic"})
    with pytest.raises(ValueError, match=r"missing \['std'\]"):
        Preprocessing.from_dict({"image_size": 32, "mean": [0.5] * 3})
    with pytest.raises(ValueError, match="no 'preprocessing'"):
        Preprocessing.from_meta({"class_names": ["a"]})
    assert Preprocessing.from_dict(pre) is pre
    with pytest.deprecated_call():
        assert pre["std"] == [0.25] * 3 and pre.get("resize") == "resize"
    with pytest.raises(dataclasses.FrozenInstanceError):
        pre.input_size = 64
