"""The preprocessing that belongs to pretrained weights: their mean/std, sizes and interpolation.

``get_transforms`` reads them from torchvision's ``EfficientNet_V2_S_Weights.DEFAULT`` or from timm's
``pretrained_cfg``. Training takes only mean and std from it (``effv2birds.preprocessing.Preprocessing``
is what a run does); ``.eval`` is the weights' own evaluation transform, torchvision's
``ImageClassification`` preset (the object ``EfficientNet_V2_S_Weights.DEFAULT.transforms()``
returns) with the weights' settings, so it gives bit-identical tensors for PIL images, (C,H,W) and
(B,C,H,W) uint8 tensors.

>>> from effv2birds.models import get_transforms
>>> t = get_transforms(pretrained=True)
>>> t.mean, t.resize_size, t.crop_size, t.interpolation
((0.485, 0.456, 0.406), 384, 384, 'bilinear')
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
from torch import nn

from effv2birds.errors import ConfigError

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
    """The weights' evaluation preprocessing: the ``.eval`` callable and its settings.

    ``.eval`` takes a PIL image, a (C,H,W) uint8 tensor or a (B,C,H,W) uint8 tensor: resize the shorter
    side to ``resize_size``, center-crop ``crop_size``, scale to [0, 1], normalise with ``mean``/``std``
    (torchvision's names: ``resize_size``, ``crop_size``). ``source`` names the weights.

    >>> t = ModelTransforms(mean=(0.5,) * 3, std=(0.5,) * 3, resize_size=40, crop_size=40)
    >>> t.eval(torch.zeros(3, 50, 60, dtype=torch.uint8)).shape
    torch.Size([3, 40, 40])
    >>> ModelTransforms.from_dict(t.to_dict()).to_dict() == t.to_dict()
    True
    """

    def __init__(self, *, mean, std, resize_size: int | None = None, crop_size: int, interpolation: str = "bilinear",
                 min_size: int = 33, source: str = "", eval_size: int | None = None) -> None:
        from torchvision.transforms import InterpolationMode

        if eval_size is not None:
            warnings.warn("ModelTransforms(eval_size=...) is now resize_size= (the resize before the center crop; "
                          "TrainConfig.eval_size is the evaluation resolution)", DeprecationWarning, stacklevel=2)
            if resize_size is not None and resize_size != eval_size:
                raise ConfigError(f"resize_size={resize_size} and its old name eval_size={eval_size} disagree")
            resize_size = eval_size
        if resize_size is None:
            raise TypeError("ModelTransforms() needs resize_size= (the shorter side before the center crop)")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ConfigError(f"mean {self.mean} and std {self.std} must have equal length and std > 0")
        self.resize_size = int(resize_size)
        self.crop_size = int(crop_size)
        if self.crop_size < 1 or self.resize_size < self.crop_size:
            raise ConfigError(f"need 1 <= crop_size <= resize_size, got crop_size={crop_size}, "
                             f"resize_size={resize_size}")
        try:
            self._mode = InterpolationMode(str(interpolation).lower())
        except ValueError:
            allowed = ", ".join(m.value for m in InterpolationMode)
            raise ConfigError(f"interpolation={interpolation!r} is not valid; choose one of {allowed}") from None
        self.interpolation = self._mode.value
        self.min_size = int(min_size)
        self.source = source
        self._eval = self._build_eval()
        self._train: nn.Module | None = None  # built on the first (deprecated) .train call

    @property
    def eval_size(self) -> int:
        """Deprecated name of :attr:`resize_size`."""
        warnings.warn("ModelTransforms.eval_size is now resize_size (the resize before the center crop)",
                      DeprecationWarning, stacklevel=2)
        return self.resize_size

    def _build_eval(self) -> nn.Module:
        from torchvision.transforms._presets import ImageClassification

        return ImageClassification(crop_size=self.crop_size, resize_size=self.resize_size, mean=self.mean,
                                   std=self.std, interpolation=self._mode, antialias=True)

    def eval(self, image: Any) -> torch.Tensor:
        """Resize (shorter side to ``resize_size``), center-crop ``crop_size``, scale to [0,1], normalise."""
        warn_if_too_small(self.crop_size, self.min_size)
        return self._eval(image)

    def train(self, image: Any) -> torch.Tensor:
        """Deprecated, to be removed: a random-resized crop (scale 0.08-1) to ``crop_size`` and a flip,
        independently per image of a batch, then normalised. effv2birds never trained with it: training
        augments with ``effv2birds.data.BatchAugment``."""
        from torchvision.transforms import v2

        warnings.warn("ModelTransforms.train is deprecated and will be removed: effv2birds trains with "
                      "effv2birds.data.BatchAugment (BatchAugment.from_preprocessing)", DeprecationWarning,
                      stacklevel=2)
        warn_if_too_small(self.crop_size, self.min_size)
        if self._train is None:
            self._train = v2.Compose([
                v2.ToImage(), v2.RandomResizedCrop(self.crop_size, scale=(0.08, 1.0), interpolation=self._mode,
                                                   antialias=True),
                v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std),
                v2.ToPureTensor(),
            ])
        if torch.is_tensor(image) and image.ndim == 4:
            return torch.stack([self._train(x) for x in image])
        return self._train(image)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings; ``ModelTransforms.from_dict`` rebuilds an identical object."""
        return dict(mean=list(self.mean), std=list(self.std), resize_size=self.resize_size, crop_size=self.crop_size,
                    interpolation=self.interpolation, min_size=self.min_size, source=self.source)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelTransforms":
        """Rebuild from :meth:`to_dict`; also reads the ``"transforms"`` entry of runs saved by earlier
        versions (``eval_size`` for ``resize_size``; their ``train_scale`` and ``hflip`` never ran and are dropped).

        >>> old = dict(mean=[0.5] * 3, std=[0.5] * 3, eval_size=40, crop_size=32, train_scale=[0.08, 1.0], hflip=True)
        >>> ModelTransforms.from_dict(old).resize_size
        40
        """
        data = dict(data)
        if "eval_size" in data and "resize_size" not in data:
            data["resize_size"] = data.pop("eval_size")
        for never_ran in ("train_scale", "hflip"):
            data.pop(never_ran, None)
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "eval_size"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelTransforms field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"ModelTransforms({inner})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelTransforms) and other.to_dict() == self.to_dict()


def get_transforms(name: str | None = None, *, backend: str | None = None, pretrained: bool = False,
                   weights: str | None = None, image_size: int | None = None) -> ModelTransforms:
    """Preprocessing for a model: the pretrained weights' normalisation, sizes and interpolation.

    torchvision: ``EfficientNet_V2_S_Weights.DEFAULT`` (ImageNet mean/std, 384 px, bilinear).
    timm: the model's ``pretrained_cfg`` (``tf_`` weights use mean/std 0.5, bicubic); timm's
    ``crop_pct`` sets the resize before the center crop. ``image_size`` overrides the crop size
    (e.g. 32 for the study's low-resolution training; with pretrained weights, below their 33 px
    minimum a warning is given once per process). A local ``weights=`` file uses the same
    settings as the named model's pretrained weights. A run takes only ``mean``, ``std`` and
    ``source`` from here (``Preprocessing.from_config``); ``.eval`` is the weights' own evaluation path.

    >>> get_transforms("timm/tf_efficientnetv2_s", image_size=64).mean
    (0.5, 0.5, 0.5)
    """
    spec = resolve_model_name(name, backend)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r} is not valid: use a positive integer or None")
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
    return ModelTransforms(mean=mean, std=std, resize_size=resize, crop_size=crop, interpolation=mode,
                           min_size=min_size, source=source)
