"""One run's preprocessing: how a photo becomes the model's input, in one object.

A :class:`Preprocessing` is built once per run from its ``TrainConfig`` and saved, as its
:meth:`~Preprocessing.to_dict`, under ``"preprocessing"`` in the weights' metadata. Evaluation
during training, ``load_trained`` / ``predict``, ``evaluate``, the exports' JSON and the model
cards all read it back from there, so they decode, resize and normalise as the run did. Training
decodes its caches with the same policy (at the training size) and ``BatchAugment`` adds the
augmentation, then scales with the same mean/std (``BatchAugment.from_preprocessing``).

It lives above ``effv2birds.data`` and ``effv2birds.models`` (it uses both) and below
``effv2birds.training`` and ``effv2birds.export`` (they use it).

>>> import PIL.Image
>>> pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
>>> image = pre.load_image(PIL.Image.new("RGB", (64, 48), (255, 0, 0)))
>>> tuple(image.shape), image.dtype
((3, 32, 32), torch.uint8)
>>> pre.to_model_input(image[None])[0, :, 0, 0].tolist()
[1.0, -1.0, -1.0]
>>> Preprocessing.from_dict(pre.to_dict()) == pre
True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch

from effv2birds.errors import ConfigError, check_number

if TYPE_CHECKING:
    from effv2birds.config import TrainConfig

__all__ = ["Preprocessing"]

# the saved form: runs written so far store the input size as "image_size" (sidecar readers use it too)
_KEYS = ("image_size", "resize", "mean", "std", "normalize", "mean_std_source", "photo_size")
# runs saved before these keys existed used these values ("photo_size" is saved only when set)
_OLD_DEFAULTS = {"resize": "resize", "normalize": True, "mean_std_source": "", "photo_size": None}


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """Decode, resize and scale photos as a run does in evaluation, ``predict`` and export.

    - ``input_size``: the side of the square image the model is given in evaluation, ``predict`` and
      export (``TrainConfig.eval_size``; training images are ``TrainConfig.image_size``, and progressive
      learning changes that per stage). Saved as ``"image_size"``.
    - ``resize``: ``"resize"`` squashes the whole photo to the square, ``"resize_crop"`` resizes the
      short side and keeps the centre square (``effv2birds.data.decode_resize``; bilinear, antialiased).
    - ``normalize``: after scaling to [0, 1], subtract ``mean`` and divide by ``std`` (per RGB channel);
      ``False`` keeps [0, 1] (the study). ``mean``/``std`` are kept either way, unused when ``False``.
    - ``mean_std_source``: where ``mean``/``std`` came from (e.g. ``"timm tf_efficientnetv2_s.in21k_ft_in1k"``);
      ``""`` when unknown (runs saved before it was recorded).
    - ``photo_size``: when set, every photo is first made ``photo_size`` x ``photo_size`` (with ``resize``)
      and then resized to ``input_size``: the study's 32x32 photos fed to the network at a larger input
      (``TrainConfig.photo_size``). ``None``: photos go straight to ``input_size``; a ``photo_size`` equal to
      ``input_size`` is that too (the same pixels), so it is stored as ``None``.

    >>> pre = Preprocessing(input_size=64, resize="resize_crop", normalize=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> pre.to_dict()["image_size"], pre.resize
    (64, 'resize_crop')
    >>> Preprocessing(input_size=64, resize="crop", mean=(0.5,) * 3, std=(0.5,) * 3)
    Traceback (most recent call last):
    ...
    effv2birds.errors.ConfigError: resize='crop' is not valid; choose one of resize, resize_crop
    """

    input_size: int
    resize: str = "resize"
    normalize: bool = True
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mean_std_source: str = ""
    photo_size: int | None = None

    # decode_resize's PIL resampling; constant, hence not a field (the export JSON states it)
    INTERPOLATION: ClassVar[str] = "bilinear"

    def __post_init__(self) -> None:
        from effv2birds.data.decode import RESIZE_POLICIES, photo_step

        size = self.input_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"input_size={size!r} is not valid: a positive integer (pixels)")
        if self.resize not in RESIZE_POLICIES:
            raise ConfigError(f"resize={self.resize!r} is not valid; choose one of {', '.join(RESIZE_POLICIES)}")
        check_number("photo_size", self.photo_size, low=1, low_ok=True, integer=True, allow_none=True)
        object.__setattr__(self, "photo_size", photo_step(self.photo_size, size))
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize={self.normalize!r} is not valid: True or False")
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ConfigError(f"mean={self.mean!r} and std={self.std!r} must be 3 numbers each (std > 0)")
        object.__setattr__(self, "mean", mean)  # lists from JSON: tuples, so that equal settings compare equal
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "mean_std_source", str(self.mean_std_source))

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: "TrainConfig") -> "Preprocessing":
        """What a run of ``config`` does: its ``eval_size``, ``resize`` and ``normalize``, with the mean and
        std of the configured model's weights (``get_transforms``; also for models trained from scratch).

        >>> from effv2birds import TrainConfig
        >>> pre = Preprocessing.from_config(TrainConfig(model="timm/tf_efficientnetv2_s", image_size=32,
        ...                                             eval_image_size=40))
        >>> pre.input_size, pre.mean, pre.mean_std_source
        (40, (0.5, 0.5, 0.5), 'timm tf_efficientnetv2_s.in21k_ft_in1k')
        """
        from effv2birds.models import get_transforms

        weights = get_transforms(config.model, pretrained=config.pretrained,
                                 weights=config.weights, image_size=config.eval_size)
        return cls(input_size=config.eval_size, resize=config.resize, normalize=config.normalize,
                   mean=weights.mean, std=weights.std, mean_std_source=weights.source,
                   photo_size=config.photo_size)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        """The inverse of :meth:`to_dict`; also reads the ``"preprocessing"`` of runs saved by earlier
        versions (no ``resize``: ``"resize"``; no ``normalize``: ``True``; no ``mean_std_source``: ``""``).

        >>> Preprocessing.from_dict({"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3}).resize
        'resize'
        """
        if isinstance(data, Preprocessing):
            return data
        unknown = sorted(set(data) - set(_KEYS))
        missing = sorted(k for k in _KEYS if k not in data and k not in _OLD_DEFAULTS)
        if unknown or missing:
            raise ConfigError(f"not a preprocessing record: unknown key(s) {unknown}, missing {missing}; "
                             f"the keys are {', '.join(_KEYS)}")
        values = {**_OLD_DEFAULTS, **data}
        return cls(input_size=_as_int(values["image_size"]), resize=values["resize"], normalize=bool(values["normalize"]),
                   mean=values["mean"], std=values["std"], mean_std_source=values["mean_std_source"],
                   photo_size=_as_int(values["photo_size"]))

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "Preprocessing":
        """The preprocessing of saved weights' metadata (``read_weights(path)[1]``, or a hub folder's
        ``config.json["effv2birds"]``), of this version or an earlier one: runs saved with a
        ``"transforms"`` entry give its ``source`` as ``mean_std_source``.

        >>> old = {"preprocessing": {"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
        ...        "transforms": {"source": "timm tf_efficientnetv2_s.in21k_ft_in1k", "interpolation": "bicubic"}}
        >>> Preprocessing.from_meta(old).mean_std_source
        'timm tf_efficientnetv2_s.in21k_ft_in1k'
        """
        if "preprocessing" not in meta:
            raise ConfigError("the metadata has no 'preprocessing' entry; was it written by effv2birds train?")
        pre = cls.from_dict(meta["preprocessing"])
        old_source = (meta.get("transforms") or {}).get("source")
        if not pre.mean_std_source and old_source:
            pre = cls.from_dict({**pre.to_dict(), "mean_std_source": old_source})
        return pre

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, what the weights' metadata and the export JSON hold (``"photo_size"`` only when set,
        so that runs without it keep the record they always had).

        >>> Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3).to_dict()
        {'image_size': 32, 'resize': 'resize', 'mean': [0.5, 0.5, 0.5], 'std': [0.25, 0.25, 0.25], \
'normalize': True, 'mean_std_source': ''}
        """
        return {"image_size": self.input_size, "resize": self.resize, "mean": list(self.mean),
                "std": list(self.std), "normalize": self.normalize, "mean_std_source": self.mean_std_source,
                **({"photo_size": self.photo_size} if self.photo_size is not None else {})}

    # --- use -----------------------------------------------------------------------------------------
    def load_image(self, image: Any) -> torch.Tensor:
        """One photo (a path, bytes, a ``datasets`` image dict or a PIL image) decoded upright to RGB and
        resized: uint8 ``(3, input_size, input_size)``, as the run's caches hold it.

        >>> import PIL.Image
        >>> pre = Preprocessing(input_size=8, resize="resize_crop", mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> pre.load_image(PIL.Image.new("L", (40, 20), 128)).shape
        torch.Size([3, 8, 8])
        """
        from effv2birds.data.decode import decode_resize

        return torch.from_numpy(decode_resize(image, self.input_size, self.resize, self.photo_size))

    def to_model_input(self, images_uint8: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` (from :meth:`load_image` or a cache) -> the model's float32 input: scaled
        to [0, 1], normalised when ``normalize``; computed on the batch's device.

        >>> pre = Preprocessing(input_size=4, normalize=False, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> pre.to_model_input(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)).max().item()
        1.0
        """
        from effv2birds.data.augment import to_model_input

        return to_model_input(images_uint8, mean=self.mean, std=self.std, normalize=self.normalize,
                              channels_last=channels_last)

    def describe(self) -> str:
        """One sentence for model cards.

        >>> Preprocessing(input_size=32, normalize=False, mean=(0.5,) * 3, std=(0.5,) * 3).describe()
        'RGB, resized to 32 x 32 px (`resize`: the whole photo squashed to the square), bilinear, scaled to [0, 1], \
not normalised'
        """
        how = ("the whole photo squashed to the square" if self.resize == "resize"
               else "short side resized, centre square kept")
        norm = (f"then normalised with mean {list(self.mean)} and std {list(self.std)}" if self.normalize
                else "not normalised")
        size = f"{self.input_size} x {self.input_size} px"
        if self.photo_size is not None:
            size = f"{self.photo_size} x {self.photo_size} px, then to {size}"
        return f"RGB, resized to {size} (`{self.resize}`: {how}), {self.INTERPOLATION}, scaled to [0, 1], {norm}"

    # --- the dict that Predictor.preprocessing used to be ------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        warnings.warn(f"Predictor.preprocessing is a Preprocessing object now: use .to_dict()[{key!r}] or its "
                      "attributes (input_size, resize, normalize, mean, std)", DeprecationWarning, stacklevel=2)
        return self.to_dict()[key]

    def keys(self):
        """Deprecated dict-style access (so that ``dict(predictor.preprocessing)`` still works); see :meth:`to_dict`."""
        return self.to_dict().keys()

    def get(self, key: str, default: Any = None) -> Any:
        """Deprecated dict-style access (``Predictor.preprocessing`` was a dict); see :meth:`to_dict`."""
        warnings.warn("Predictor.preprocessing is a Preprocessing object now: use .to_dict().get(...) or its "
                      "attributes", DeprecationWarning, stacklevel=2)
        return self.to_dict().get(key, default)


def _as_int(value: Any) -> Any:
    """Whole floats from JSON as ints (sizes were read with int() before this object existed)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
