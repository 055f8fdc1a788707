"""Robust image decoding: every file a real photo folder holds becomes an RGB picture, or a reason.

Handles EXIF orientation, grayscale, CMYK, palette and RGBA (composited over white), 16-bit
grayscale, PNG data named ``.jpg`` (PIL looks at the bytes, not the name) and WebP. Large JPEGs are
decoded at reduced scale with PIL's draft mode when only a small picture is needed.

>>> import numpy as np, PIL.Image, io
>>> buf = io.BytesIO(); PIL.Image.new("L", (40, 20), 128).save(buf, "PNG")
>>> decode_resize(buf.getvalue(), 8).shape
(3, 8, 8)
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import PIL.Image
import PIL.ImageOps

from effv2birds.errors import ConfigError

from .names import DataError

__all__ = ["open_rgb", "decode_resize", "photo_step", "check_image", "undecoded", "raw_images", "RESIZE_POLICIES",
           "IMAGE_EXTENSIONS"]

RESIZE_POLICIES = ("resize", "resize_crop")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)


def _open(source: Any) -> PIL.Image.Image:
    """Open (lazily) a path, bytes, a datasets image dict or a PIL image."""
    if isinstance(source, PIL.Image.Image):
        return source
    if isinstance(source, dict):  # datasets' undecoded Image value: {"bytes": ..., "path": ...}
        if source.get("bytes") is not None:
            return PIL.Image.open(io.BytesIO(source["bytes"]))
        if source.get("path"):
            return PIL.Image.open(source["path"])
        raise DataError("image value has neither bytes nor path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return PIL.Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, (str, os.PathLike)):
        return PIL.Image.open(Path(source))
    if hasattr(source, "read"):
        return PIL.Image.open(source)
    if isinstance(source, np.ndarray):
        return PIL.Image.fromarray(source)
    raise TypeError(f"cannot read an image from {type(source).__name__}; pass a path, bytes or PIL image")


def _to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """Convert any PIL mode to RGB without the usual pitfalls."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("RGB") clips 16-bit values at 255 (an all-white picture); rescale instead.
        arr = np.asarray(img).astype(np.float64)
        top = arr.max() if arr.size else 0.0
        if img.mode == "F" and top <= 1.0:
            arr = arr * 255.0
        elif top > 255:
            arr = arr / 257.0  # 65535 -> 255
        return PIL.Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels often hold garbage colour; show them as a white background.
        rgba = img.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK (PIL inverts Adobe CMYK), YCbCr, P without alpha, ...


def open_rgb(source: Any, *, draft_size: int | None = None) -> PIL.Image.Image:
    """Decode an image to an upright RGB ``PIL.Image``.

    ``draft_size`` lets JPEGs decode at 1/2, 1/4 or 1/8 scale as long as both sides stay at least
    that large (much faster for big photos that end up small).

    >>> import PIL.Image
    >>> open_rgb(PIL.Image.new("CMYK", (4, 4))).mode
    'RGB'
    """
    img = _open(source)
    if draft_size and getattr(img, "format", None) == "JPEG":
        img.draft(None, (draft_size, draft_size))
    img.load()
    if img.getexif().get(PIL.Image.ExifTags.Base.Orientation, 1) != 1:
        img = PIL.ImageOps.exif_transpose(img)
    return _to_rgb(img)


def decode_resize(
    source: Any, size: int, resize: Literal["resize", "resize_crop"] = "resize", photo_size: int | None = None
) -> np.ndarray:
    """Decode and resize one image to a ``(3, size, size)`` uint8 array (CHW, RGB).

    ``resize="resize"`` squashes the whole photo to a square (the study's choice);
    ``"resize_crop"`` resizes the short side to ``size`` and keeps the centre square.
    Resampling is bilinear with antialiasing (PIL). With ``photo_size`` the photo is first made
    ``photo_size`` x ``photo_size`` that way and then resized (squashed) to ``size``: the network sees
    a ``photo_size`` photo at a ``size`` input, e.g. the study's 32x32 photos fed at 64 px.

    >>> import PIL.Image
    >>> decode_resize(PIL.Image.new("RGB", (300, 200), (255, 0, 0)), 32)[:, 0, 0].tolist()
    [255, 0, 0]
    >>> decode_resize(PIL.Image.new("RGB", (300, 200), (255, 0, 0)), 64, photo_size=32).shape
    (3, 64, 64)
    """
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"resize={resize!r} is not valid; choose one of {', '.join(RESIZE_POLICIES)}")
    photo_size = photo_step(photo_size, size)
    img = open_rgb(source, draft_size=photo_size or size)
    if photo_size is not None:
        # the same pixels as saving the photo_size image losslessly and decoding that file at ``size``
        img = _resized(img, photo_size, resize)
        resize = "resize"  # already square
    img = _resized(img, size, resize)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def photo_step(photo_size: int | None, size: int) -> int | None:
    """The ``photo_size`` that is a real first step before resizing to ``size``: ``None`` when unset or equal
    to ``size`` (a photo made ``size`` px and then resized to ``size`` px is the photo made ``size`` px), so that
    the cache, the saved preprocessing and the decoder all treat such a run as a plain one.

    >>> photo_step(32, 64), photo_step(128, 128), photo_step(None, 64)
    (32, None, None)
    """
    return None if photo_size == size else photo_size


def _resized(img: "PIL.Image.Image", size: int, resize: str) -> "PIL.Image.Image":
    if resize == "resize_crop":
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), PIL.Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        return img.crop((left, top, left + size, top + size))
    if img.size != (size, size):
        return img.resize((size, size), PIL.Image.BILINEAR)
    return img


def check_image(source: Any) -> tuple[str | None, str | None]:
    """Try to decode an image completely; return ``(reason, sha1)``.

    ``reason`` is ``None`` for a usable image, else a short text saying why it cannot be used;
    ``sha1`` is the hex digest of the file bytes (``None`` for in-memory PIL images), used to find
    byte-identical files across splits. Decoding is done at reduced scale where possible, which
    still reads all compressed data and so still finds truncated files.

    >>> check_image(b"not an image")[0]
    'not an image PIL can read (UnidentifiedImageError)'
    """
    try:
        if isinstance(source, dict):
            data = source.get("bytes")
            if data is None and source.get("path"):
                data = Path(source["path"]).read_bytes()
        elif isinstance(source, (str, os.PathLike)):
            data = Path(source).read_bytes()
        elif isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        else:
            data = None
    except OSError as exc:
        return f"cannot read file ({type(exc).__name__}: {exc.strerror or exc})", None
    digest = hashlib.sha1(data).hexdigest() if data is not None else None
    if data is not None and len(data) == 0:
        return "empty file", digest
    try:
        img = open_rgb(io.BytesIO(data) if data is not None else source, draft_size=64)
        if min(img.size) < 1:
            return "image has no pixels", digest
    except PIL.UnidentifiedImageError:
        return "not an image PIL can read (UnidentifiedImageError)", digest
    except PIL.Image.DecompressionBombError as exc:
        return f"image too large ({exc})", digest
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text.lower():
            return f"truncated image data ({type(exc).__name__}: {text})", digest
        return f"corrupt image data ({type(exc).__name__}: {text})", digest
    return None, digest


def undecoded(split: Any) -> Any:
    """``split`` (a ``datasets.Dataset``) with its ``image`` column left undecoded.

    Its values are then ``{"bytes": ..., "path": ...}`` dicts: the file a photo came from (or its
    bytes), read without decoding a single picture; every function here takes such a value.

    >>> import datasets, PIL.Image
    >>> ds = datasets.Dataset.from_dict({"image": [PIL.Image.new("RGB", (2, 2))]},
    ...                                 features=datasets.Features({"image": datasets.Image()}))
    >>> undecoded(ds).features["image"].decode, ds.features["image"].decode
    (False, True)
    """
    import datasets

    return split.cast_column("image", datasets.Image(decode=False))


def raw_images(split: Any) -> list[dict[str, Any]]:
    """The undecoded ``image`` values of a ``datasets.Dataset`` split (see :func:`undecoded`), in row order.

    >>> import datasets, PIL.Image
    >>> ds = datasets.Dataset.from_dict({"image": [PIL.Image.new("RGB", (2, 2))]},
    ...                                 features=datasets.Features({"image": datasets.Image()}))
    >>> sorted(raw_images(ds)[0]), check_image(raw_images(ds)[0])[0] is None
    (['bytes', 'path'], True)
    """
    return undecoded(split)["image"]
