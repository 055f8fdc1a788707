"""Preprocessing that travels with a model: eval and train transforms plus their JSON form.

The eval transform is torchvision's own ``ImageClassification`` preset (the object
``EfficientNet_V2_S_Weights.DEFAULT.transforms()`` returns), parametrised by the weights' mean,
std, sizes and interpolation, so it gives bit-identical tensors for PIL images, (C,H,W) and
(B,C,H,W) uint8 tensors. The train transform uses torchvision transforms v2.

>>> from effv2birds.models import get_transforms
>>> t = get_transforms(pretrained=True)
>>> t.mean, t.eval_size, t.crop_size, t.interpolation
((0.485, 0.456, 0.406), 384, 384, 'bilinear')
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
from torch import nn

from .factory import resolve_model_name

__all__ = ["ModelTransforms", "get_transforms", "warn_if_too_small"]

_WARNED: set[tuple[int, int]] = set()


def warn_if_too_small(size: int, min_size: int = 33) -> bool:
    """Warn once per (size, min_size) when a model input side is below the weights' minimum.

    Returns True when ``size`` is too small. EfficientNetV2-S downsamples 32x, so below 33 px the
    last stage works on a 1x1 map; the study trains at 32 px on purpose, hence a warning, not an error.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     warn_if_too_small(32)
    True
    """
    if size >= min_size:
        return False
    if (size, min_size) not in _WARNED:
        _WARNED.add((size, min_size))
        warnings.warn(
            f"model input of {size} px is smaller than the {min_size} px minimum of EfficientNetV2-S weights: the "
            f"last stage sees a 1x1 feature map. This works (the study trains at 32 px), but ImageNet accuracy "
            f"does not carry over; use image_size >= {min_size} to stay inside the weights' range.",
            UserWarning,
            stacklevel=3,
        )
    return True


class ModelTransforms:
    """Eval/train preprocessing of a model: ``.eval`` and ``.train`` callables and their settings.

    Both callables take a PIL image, a (C,H,W) uint8 tensor or a (B,C,H,W) uint8 tensor and return
    float tensors normalised with ``mean``/``std`` (train: per-image random crop and flip).

    >>> t = ModelTransforms(mean=(0.5,) * 3, std=(0.5,) * 3, eval_size=40, crop_size=40)
    >>> t.eval(torch.zeros(3, 50, 60, dtype=torch.uint8)).shape
    torch.Size([3, 40, 40])
    >>> ModelTransforms.from_dict(t.to_dict()).to_dict() == t.to_dict()
    True
    """

    def __init__(self, *, mean, std, eval_size: int, crop_size: int, interpolation: str = "bilinear",
                 min_size: int = 33, train_scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True,
                 source: str = "") -> None:
        from torchvision.transforms import InterpolationMode

        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"mean {self.mean} and std {self.std} must have equal length and std > 0")
        self.eval_size = int(eval_size)
        self.crop_size = int(crop_size)
        if self.crop_size < 1 or self.eval_size < self.crop_size:
            raise ValueError(f"need 1 <= crop_size <= eval_size, got crop_size={crop_size}, eval_size={eval_size}")
        try:
            self._mode = InterpolationMode(str(interpolation).lower())
        except ValueError:
            allowed = ", ".join(m.value for m in InterpolationMode)
            raise ValueError(f"interpolation={interpolation!r} is not valid; choose one of {allowed}") from None
        self.interpolation = self._mode.value
        self.min_size = int(min_size)
        self.train_scale = (float(train_scale[0]), float(train_scale[1]))
        self.hflip = bool(hflip)
        self.source = source
        self._eval = self._build_eval()
        self._train = self._build_train()

    def _build_eval(self) -> nn.Module:
        from torchvision.transforms._presets import ImageClassification

        return ImageClassification(crop_size=self.crop_size, resize_size=self.eval_size, mean=self.mean,
                                   std=self.std, interpolation=self._mode, antialias=True)

    def _build_train(self) -> nn.Module:
        from torchvision.transforms import v2

        steps = [v2.ToImage(), v2.RandomResizedCrop(self.crop_size, scale=self.train_scale,
                                                     interpolation=self._mode, antialias=True)]
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std), v2.ToPureTensor()]
        return v2.Compose(steps)

    def eval(self, image: Any) -> torch.Tensor:
        """Resize (shorter side to ``eval_size``), center-crop ``crop_size``, scale to [0,1], normalise."""
        warn_if_too_small(self.crop_size, self.min_size)
        return self._eval(image)

    def train(self, image: Any) -> torch.Tensor:
        """Random-resized crop to ``crop_size`` and flip (independently per image of a batch), normalise."""
        warn_if_too_small(self.crop_size, self.min_size)
        if torch.is_tensor(image) and image.ndim == 4:
            return torch.stack([self._train(x) for x in image])
        return self._train(image)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings; ``ModelTransforms.from_dict`` rebuilds an identical object."""
        return dict(mean=list(self.mean), std=list(self.std), eval_size=self.eval_size, crop_size=self.crop_size,
                    interpolation=self.interpolation, min_size=self.min_size, train_scale=list(self.train_scale),
                    hflip=self.hflip, source=self.source)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelTransforms":
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelTransforms field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"ModelTransforms({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelTransforms) and other.to_dict() == self.to_dict()


def get_transforms(name: str = "efficientnet_v2_s", *, backend: str = "torchvision", pretrained: bool = False,
                   weights: str | None = None, image_size: int | None = None) -> ModelTransforms:
    """Preprocessing for a model: the pretrained weights' normalisation, sizes and interpolation.

    torchvision: ``EfficientNet_V2_S_Weights.DEFAULT`` (ImageNet mean/std, 384 px, bilinear).
    timm: the model's ``pretrained_cfg`` (``tf_`` weights use mean/std 0.5, bicubic); timm's
    ``crop_pct`` sets the resize before the center crop. ``image_size`` overrides the crop size
    (e.g. 32 for the study's low-resolution training; with pretrained weights, below their 33 px
    minimum a warning is given once per process). A local ``weights=`` file uses the same
    settings as the named model's pretrained weights.

    >>> get_transforms("tf_efficientnetv2_s", image_size=64).mean
    (0.5, 0.5, 0.5)
    """
    spec = resolve_model_name(name, backend)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size={image_size!r} is not valid: use a positive integer or None")
    if spec.backend == "torchvision":
        from torchvision.models import EfficientNet_V2_S_Weights

        w = EfficientNet_V2_S_Weights.DEFAULT
        preset = w.transforms()
        crop, resize = preset.crop_size[0], preset.resize_size[0]
        mean, std, mode = preset.mean, preset.std, preset.interpolation.value
        min_size = int(w.meta.get("min_size", (33, 33))[0])
        crop_pct = crop / resize
        source = f"torchvision EfficientNet_V2_S_Weights.{w.name}"
    else:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(spec.name)
        crop = int(cfg.input_size[-1])
        crop_pct = float(cfg.crop_pct or 1.0)
        mean, std, mode = cfg.mean, cfg.std, cfg.interpolation or "bicubic"
        min_size = 33  # same network stride (32) as torchvision's, whose weights state 33 px
        source = f"timm {spec.arch}.{cfg.tag}"
    if image_size is not None:
        crop = image_size
    resize = int(math.floor(crop / crop_pct))
    if pretrained or weights is not None:  # the minimum is a property of the pretrained weights
        warn_if_too_small(crop, min_size)
    return ModelTransforms(mean=mean, std=std, eval_size=resize, crop_size=crop, interpolation=mode,
                           min_size=min_size, source=source)
