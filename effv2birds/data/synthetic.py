"""Built-in synthetic birds: a 25-class data set that needs no download.

Every class is a cartoon bird (body, wing, tail, head, beak, eye) with its own colours, drawn at
64 px with random position, size, tilt, facing direction, lighting and background, so a small
model learns it in a short CPU run. Eight pairs of classes are *fine-detail twins*: they look the
same except that one twin's body has 1-pixel stripes (period 2 px at 64 px, mean colour unchanged).
Downsampled to 32 px the stripes average away, so the twins can only be told apart at higher
resolution: 128 px training beats 32 px (at 32 px the best possible accuracy is 17/25 = 68 %).

Images are stored as PNG bytes in a ``datasets`` ``Image`` column, labelled with the 25 species of
the Kaggle data (:data:`effv2birds.data.names.BIRD_SPECIES`). The same seed gives the same images.

>>> ds = synthetic_birds(100, seed=0)
>>> sorted(ds), ds["train"].num_rows, ds["train"].features["label"].num_classes
(['test', 'train', 'validation'], 100, 25)
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
import PIL.Image

from effv2birds.errors import ConfigError

from .names import BIRD_SPECIES

__all__ = ["synthetic_birds", "draw_birds", "FINE_TWINS", "NATIVE_SIZE"]

NATIVE_SIZE = 64

# (plain twin, striped twin): identical coarse look, the second has fine body stripes.
FINE_TWINS: tuple[tuple[str, str], ...] = (
    ("Common Kingfisher", "White Breasted Kingfisher"),
    ("White Wagtail", "Gray Wagtail"),
    ("Northern Lapwing", "Red Wattled Lapwing"),
    ("Coppersmith Barbet", "Brown Headed Barbet"),
    ("Cattle Egret", "Sarus Crane"),
    ("Common Myna", "Jungle Babbler"),
    ("House Crow", "Indian Grey Hornbill"),
    ("Common Tailorbird", "Forest Wagtail"),
)


def _class_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class: colours (25, 5, 3) for body/wing/tail/head/beak, beak length, tail length, striped flag."""
    striped = {b for _, b in FINE_TWINS}
    twin_of = {b: a for a, b in FINE_TWINS}
    looks = [n for n in BIRD_SPECIES if n not in striped]  # 17 distinct looks
    n_looks = len(looks)
    colours = np.zeros((n_looks, 5, 3), np.float32)
    for i in range(n_looks):
        hue = i / n_looks
        body = colorsys.hsv_to_rgb(hue, 0.75, 0.85)
        wing = colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.6, 0.35 if i % 2 else 0.95)
        tail = colorsys.hsv_to_rgb((hue + 0.25 * (1 + i % 3)) % 1.0, 0.7, 0.6)
        head = colorsys.hsv_to_rgb((hue + 7 / 17) % 1.0, 0.3 + 0.6 * (i % 2), 0.9 - 0.5 * (i % 3 == 0))
        beak = colorsys.hsv_to_rgb(0.12 * (i % 4), 0.9, 0.9)
        colours[i] = np.array([body, wing, tail, head, beak]) * 255
    look_index = {n: i for i, n in enumerate(looks)}
    idx = np.array([look_index[twin_of.get(n, n)] for n in BIRD_SPECIES])
    beak_len = np.where(idx % 2 == 0, 0.10, 0.18).astype(np.float32)
    tail_len = np.where(idx % 3 == 0, 0.10, 0.2).astype(np.float32)
    stripes = np.array([n in striped for n in BIRD_SPECIES])
    return colours[idx], beak_len, tail_len, stripes


_COLOURS, _BEAK, _TAIL, _STRIPES = _class_table()


def draw_birds(labels: np.ndarray, rng: np.random.Generator, size: int = NATIVE_SIZE) -> np.ndarray:
    """Draw one bird per label, vectorised; returns uint8 ``(N, size, size, 3)``.

    >>> draw_birds(np.array([0, 24]), np.random.default_rng(0)).shape
    (2, 64, 64, 3)
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    S = float(size)

    r = lambda lo, hi: rng.uniform(lo, hi, size=(n, 1, 1)).astype(np.float32)  # noqa: E731
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    yy, xx = yy[None], xx[None]

    # background: a gradient between two random muted colours, plus noise
    c0 = rng.uniform(40, 215, size=(n, 1, 1, 3)).astype(np.float32)
    c1 = rng.uniform(40, 215, size=(n, 1, 1, 3)).astype(np.float32)
    ang = r(0, 2 * np.pi)
    t = ((np.cos(ang) * xx + np.sin(ang) * yy) / S + 1.0) / 2.0
    img = c0 + (c1 - c0) * t[..., None]

    # the bird's frame: centre, scale, tilt and facing direction
    cx, cy, s = r(0.35, 0.65) * S, r(0.4, 0.62) * S, r(0.75, 1.05) * S
    th = r(-0.35, 0.35)
    face = np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (np.cos(th) * dx + np.sin(th) * dy) * face / s
    v = (-np.sin(th) * dx + np.cos(th) * dy) / s

    colours = _COLOURS[labels][:, None, None] * r(0.8, 1.15)[..., None, None]  # (N,1,1,5,3), lighting
    colours = colours + rng.normal(0, 6, size=(n, 1, 1, 1, 3)).astype(np.float32)
    blen, tlen = _BEAK[labels][:, None, None], _TAIL[labels][:, None, None]

    def paint(mask, colour):
        nonlocal img
        img = np.where(mask[..., None], colour, img)

    paint(((u + 0.2 + tlen / 2) / (0.08 + tlen / 2)) ** 2 + ((v + 0.02) / 0.05) ** 2 < 1, colours[..., 2, :])
    body = (u / 0.24) ** 2 + (v / 0.14) ** 2 < 1
    body_colour = colours[..., 0, :]
    paint(body, body_colour)
    striped = _STRIPES[labels][:, None, None] & body
    sign = np.where((np.arange(size) % 2 == 0), 1.0, -1.0).astype(np.float32)[None, :, None, None]
    img = np.where(striped[..., None], img + 45.0 * sign, img)
    paint(((u + 0.03) / 0.14) ** 2 + ((v + 0.02) / 0.07) ** 2 < 1, colours[..., 1, :])
    hx, hy = 0.23, -0.12
    paint((u - hx) ** 2 + (v - hy) ** 2 < 0.095**2, colours[..., 3, :])
    beak = (u > hx + 0.06) & (u < hx + 0.08 + blen) & (np.abs(v - hy) < 0.03 * (1 - (u - hx - 0.06) / (blen + 0.03)))
    paint(beak, colours[..., 4, :])
    paint((u - hx - 0.03) ** 2 + (v - hy + 0.02) ** 2 < 0.022**2, np.full(3, 15.0, np.float32))

    img = img + rng.normal(0, 5, size=img.shape).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def synthetic_birds(size: int = 2000, *, seed: int = 0, eval_size: int | None = None):
    """The synthetic data set as a ``datasets.DatasetDict`` (train/validation/test).

    ``size`` train images (balanced over the 25 classes); validation and test get ``eval_size``
    each (default ``max(250, size // 5)``). Splits are drawn from independent random streams.

    >>> synthetic_birds(50, seed=1)["validation"].num_rows
    250
    """
    import datasets

    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"synthetic size={size!r} must be a positive integer")
    eval_size = max(250, size // 5) if eval_size is None else eval_size
    features = datasets.Features(
        {"image": datasets.Image(mode="RGB"), "label": datasets.ClassLabel(names=list(BIRD_SPECIES))}
    )
    out = {}
    streams = np.random.SeedSequence([seed, 0xB1D5]).spawn(3)
    for name, n, ss in zip(("train", "validation", "test"), (size, eval_size, eval_size), streams):
        rng = np.random.default_rng(ss)
        labels = rng.permutation(np.arange(n) % len(BIRD_SPECIES))
        images = []
        for start in range(0, n, 256):
            images.extend(_png(a) for a in draw_birds(labels[start:start + 256], rng))
        out[name] = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b in images], "label": labels.tolist()},
            features=features, split=name,
        )
    return datasets.DatasetDict(out)
