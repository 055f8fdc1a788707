"""Batch-wise augmentation on uint8 tensors, on whatever device the batch lives on.

:class:`BatchAugment` replaces a per-image PIL pipeline: random crop (pad + translate, or random
resized crop via per-sample affine grids), horizontal flip, RandAugment / TrivialAugment
(``torchvision.transforms.v2`` ops, applied to small groups of the batch so that different images
get different operations), scaling to [0, 1], normalisation, and MixUp/CutMix
(``torchvision.transforms.v2``) producing soft targets. All randomness comes from torch's global
RNG, so seeding torch (or ``accelerate.utils.set_seed``) makes it reproducible.

>>> import torch
>>> aug = BatchAugment(10, mean=(0.5,) * 3, std=(0.25,) * 3)
>>> x, y = aug(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4))
>>> tuple(x.shape), x.dtype, y.dtype
((4, 3, 32, 32), torch.float32, torch.int64)
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .names import DataError

__all__ = ["BatchAugment", "to_model_input"]

_CROPS = ("none", "pad", "resized")
_AUTO = ("none", "randaugment", "trivialaugment")


def _check_uint8(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"expected a uint8 image batch of shape (B, 3, H, W), got {shape}")
    if images.dtype != torch.uint8:
        raise DataError(f"expected uint8 images (0-255), got {images.dtype}; pass the cached uint8 batch")


def to_model_input(
    images_uint8: torch.Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    normalize: bool = True,
    channels_last: bool = False,
    size: int | None = None,
) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 scaled to [0, 1], optionally resized and normalised.

    The evaluation path (no randomness). ``size`` resizes with antialiased bilinear
    interpolation; ``normalize=False`` keeps [0, 1] values (the study's choice).

    >>> import torch
    >>> x = to_model_input(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8), mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> round(x.max().item(), 4)
    1.0
    """
    _check_uint8(images_uint8)
    return _scale(images_uint8, mean=mean, std=std, normalize=normalize, channels_last=channels_last, size=size)


@functools.lru_cache(maxsize=64)
def _affine(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) with ``x * scale + shift == (x / 255 - mean) / std``, built once per device:
    a fresh ``torch.as_tensor(list, device="cuda")`` per batch would wait for the GPU every step."""
    std_t = torch.tensor(std, dtype=torch.float32)
    scale = 1.0 / (255.0 * std_t)
    shift = -torch.tensor(mean, dtype=torch.float32) / std_t
    return shift.view(1, -1, 1, 1).to(device), scale.view(1, -1, 1, 1).to(device)


def _scale(images, *, mean, std, normalize, channels_last, size, owned: bool = False) -> torch.Tensor:
    """uint8 or float (0-255) -> normalised float32: one float copy, then in-place scale and shift
    (``owned=True``: ``images`` is a temporary float batch that may be overwritten)."""
    x = images.float()
    owned = owned or x is not images
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if normalize:
        shift, scale = _affine(tuple(map(float, mean)), tuple(map(float, std)), x.device)
        # in place on our own float copy (never on the caller's tensor): 2.4x faster on a CPU
        # than one broadcasting addcmul
        x = x.mul_(scale).add_(shift) if owned else x * scale + shift
    else:
        x = x.mul_(1.0 / 255.0) if owned else x.mul(1.0 / 255.0)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _windows_per_sample(x: torch.Tensor, pad: int, off: torch.Tensor, flip: torch.Tensor | None,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """Reflect-pad by ``pad``, then copy sample i's window at offset ``off[i]`` (flipped where ``flip``)
    into a new batch of ``dtype`` (default: the input's)."""
    b, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # no black frames
    flips = flip.tolist() if flip is not None else [False] * b
    out = torch.empty(x.shape, dtype=dtype or x.dtype, device=x.device)
    for i, ((oy, ox), flipped) in enumerate(zip(off.tolist(), flips)):
        window = xp[i, :, oy:oy + h, ox:ox + w]
        out[i] = window.flip(-1) if flipped else window
    return out


def _windows_batched(x: torch.Tensor, pad: int, off: torch.Tensor, flip: torch.Tensor | None) -> torch.Tensor:
    """The same crops as :func:`_windows_per_sample` with a fixed number of kernels (no host reads)."""
    b, _, h, w = x.shape
    # reflect at the borders; torch.cat of flipped strips is a plain copy for any dtype and device
    xp = torch.cat([x[:, :, 1:pad + 1].flip(2), x, x[:, :, -pad - 1:-1].flip(2)], dim=2)
    xp = torch.cat([xp[..., 1:pad + 1].flip(3), xp, xp[..., -pad - 1:-1].flip(3)], dim=3)
    windows = xp.unfold(2, h, 1).unfold(3, w, 1)  # every window as a view: (B, C, 2p+1, 2p+1, h, w)
    out = windows[torch.arange(b, device=x.device), :, off[:, 0], off[:, 1]]
    if flip is not None:  # torch.where, not out[flip]: boolean indexing waits for the GPU
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(-1), out)
    return out


class BatchAugment(nn.Module):
    """Per-sample random augmentation of a uint8 batch -> (normalised float batch, targets).

    ``targets`` are the int64 labels, or float ``(B, num_classes)`` soft targets when
    ``mixup_alpha`` or ``cutmix_alpha`` is > 0 (one of the two is picked per batch when both are).
    ``crop_padding`` is given for 32 px images and scaled with the image size (4 px at 32 px ->
    16 px at 128 px). ``randaug_magnitude`` is on torchvision's 0-30 scale (rounded to an
    integer); ``augment_groups`` is how many independently drawn RandAugment/TrivialAugment
    operations a batch gets (``None``: one per image). In ``eval()`` mode the module applies only
    :func:`to_model_input`. Attributes may be changed between epochs (progressive learning).

    >>> import torch
    >>> aug = BatchAugment(5, mean=(0,) * 3, std=(1,) * 3, mixup_alpha=0.2, random_crop="resized", output_size=16)
    >>> x, t = aug(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 4]))
    >>> tuple(x.shape), tuple(t.shape)
    ((2, 3, 16, 16), (2, 5))
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        normalize: bool = True,
        random_crop: str = "pad",
        crop_padding: int = 4,
        crop_scale_min: float = 0.35,
        hflip: bool = True,
        auto_augment: str = "none",
        randaug_magnitude: float = 9.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        output_size: int | None = None,
        augment_groups: int | None = 16,
        channels_last: bool = False,
    ):
        super().__init__()
        if random_crop not in _CROPS:
            raise DataError(f"random_crop={random_crop!r} is not valid; choose one of {', '.join(_CROPS)}")
        if auto_augment not in _AUTO:
            raise DataError(f"auto_augment={auto_augment!r} is not valid; choose one of {', '.join(_AUTO)}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise DataError(f"num_classes={num_classes!r} must be a positive integer")
        if not 0 < crop_scale_min <= 1:
            raise DataError(f"crop_scale_min={crop_scale_min!r} must be in (0, 1]")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise DataError(f"mean={mean!r} and std={std!r} must be 3 numbers each (std > 0)")
        self.num_classes = num_classes
        self.mean, self.std, self.normalize = tuple(mean), tuple(std), normalize
        self.random_crop, self.crop_padding, self.crop_scale_min = random_crop, crop_padding, crop_scale_min
        self.hflip, self.auto_augment, self.randaug_magnitude = hflip, auto_augment, randaug_magnitude
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.output_size, self.augment_groups, self.channels_last = output_size, augment_groups, channels_last

    @classmethod
    def from_preprocessing(cls, preprocessing, num_classes: int, **augmentation) -> "BatchAugment":
        """The augmentation of a run whose inputs are scaled as ``preprocessing`` (an
        ``effv2birds.preprocessing.Preprocessing``) says: its ``mean``, ``std`` and ``normalize``;
        ``augmentation`` takes the other arguments of ``BatchAugment`` (crop, flip, RandAugment, MixUp...).

        >>> import torch
        >>> from effv2birds.preprocessing import Preprocessing
        >>> pre = Preprocessing(input_size=32, normalize=False, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> aug = BatchAugment.from_preprocessing(pre, 10, random_crop="none", hflip=False).eval()
        >>> x, _ = aug(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8), torch.arange(2))
        >>> x.max().item(), aug.normalize
        (1.0, False)
        """
        taken = sorted({"mean", "std", "normalize"} & set(augmentation))
        if taken:
            raise DataError(f"{', '.join(taken)} come(s) from the preprocessing; pass only augmentation arguments")
        return cls(num_classes, mean=preprocessing.mean, std=preprocessing.std, normalize=preprocessing.normalize,
                   **augmentation)

    def extra_repr(self) -> str:
        return (f"crop={self.random_crop}, hflip={self.hflip}, auto_augment={self.auto_augment}"
                f"(m={self.randaug_magnitude}), mixup={self.mixup_alpha}, cutmix={self.cutmix_alpha}")

    # -- geometric ------------------------------------------------------------------------------
    def _pad_crop(self, x: torch.Tensor, flip: torch.Tensor | None, float_out: bool = False) -> torch.Tensor:
        b, c, h, w = x.shape
        pad = int(round(self.crop_padding * min(h, w) / 32)) if self.random_crop == "pad" else 0
        pad = min(pad, h - 1, w - 1)
        if pad == 0:
            if flip is None:
                return x
            return torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        off = torch.randint(0, 2 * pad + 1, (b, 2), device=x.device)
        # copying each sample's window is 5x faster on a CPU than one gather over a 6-d view; on a
        # GPU the gather is one kernel and per-sample copies would need the offsets on the host
        if x.device.type == "cpu":  # float_out: crop straight into a float batch, one pass fewer
            return _windows_per_sample(x, pad, off, flip, torch.float32 if float_out else None)
        return _windows_batched(x, pad, off, flip)

    def _resized_crop(self, x: torch.Tensor, flip: torch.Tensor | None, out: int, as_uint8: bool) -> torch.Tensor:
        b = x.shape[0]
        dev = x.device
        area = torch.empty(b, device=dev).uniform_(self.crop_scale_min, 1.0)
        log_ratio = torch.empty(b, device=dev).uniform_(math.log(3 / 4), math.log(4 / 3))
        ratio = torch.exp(log_ratio)
        sw = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
        sh = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - sw)  # centre, normalised [-1, 1] coords
        cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - sh)
        sx = sw * (torch.where(flip, -1.0, 1.0) if flip is not None else 1.0)
        # axis-aligned crops: the sampling grid is separable, so build it by broadcasting
        base = (torch.arange(out, device=dev, dtype=torch.float32) * 2 + 1) / out - 1
        gx = sx[:, None] * base + cx[:, None]
        gy = sh[:, None] * base + cy[:, None]
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        # bilinear weights are convex and reflection stays inside the image: no clamping needed
        return y.round_().to(torch.uint8) if as_uint8 else y

    # -- photometric ------------------------------------------------------------------------------
    def _auto_augment(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        if self.auto_augment == "randaugment":
            op = v2.RandAugment(num_ops=2, magnitude=int(round(min(max(self.randaug_magnitude, 0), 30))))
        else:
            op = v2.TrivialAugmentWide()
        groups = x.shape[0] if self.augment_groups is None else max(1, min(self.augment_groups, x.shape[0]))
        return torch.cat([op(chunk) for chunk in torch.tensor_split(x, groups)], dim=0)

    def _mix(self, x: torch.Tensor, labels: torch.Tensor):
        if not (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            return x, labels
        from torchvision.transforms import v2  # imported on first use only: it takes seconds

        # rebuilt per batch: cheap, and progressive learning changes the alphas between epochs
        ops = [op(alpha=float(alpha), num_classes=self.num_classes)
               for op, alpha in ((v2.MixUp, self.mixup_alpha), (v2.CutMix, self.cutmix_alpha)) if alpha > 0]
        return (ops[0] if len(ops) == 1 else v2.RandomChoice(ops))(x, labels)

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
        _check_uint8(images)
        size = self.output_size
        kw = dict(mean=self.mean, std=self.std, normalize=self.normalize, channels_last=False)
        if not self.training:
            return to_model_input(images, size=size, **{**kw, "channels_last": self.channels_last}), labels
        b = images.shape[0]
        flip = (torch.rand(b, device=images.device) < 0.5) if self.hflip else None
        if self.random_crop == "resized":
            x = self._resized_crop(images, flip, size or images.shape[-1], self.auto_augment != "none")
        else:  # RandAugment needs uint8; without it the crop may write floats directly
            x = self._pad_crop(images, flip, float_out=self.auto_augment == "none")
        if self.auto_augment != "none":
            x = self._auto_augment(x)
        x = _scale(x, size=size, owned=x is not images, **kw)
        x, targets = self._mix(x, labels.long())
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, targets
