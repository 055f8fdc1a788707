"""Shared test fixtures. Real photos live outside the repository in ../shared/data (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real photos for tests); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test photos not found at {SHARED_DATA} (see shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Training tests run one torch thread: on 2 shared cores that is several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A small generated photo folder (4 classes with hyphenated names, given train/ and test/ splits) and a
# tiny run trained on it: shared by the evaluate and predict tests. Each photo is a different scene of
# soft blobs tinted by its class, so photos are distinct (also for the near-duplicate hash).
COLOURS = {"Blue-Bird": (40, 60, 200), "Green-Bird": (40, 170, 60), "Grey-Bird": (130, 130, 130),
           "Red-Bird": (210, 40, 40)}


def colour_photo(colour, seed: int, size: int = 48):
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.tile(np.asarray(colour, dtype=np.float64), (size, size, 1))
    for _ in range(6):
        cx, cy, r = *rng.uniform(0, 1, 2), rng.uniform(0.08, 0.3)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2)[..., None] * rng.uniform(-110, 110)
    return PIL.Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def colour_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colour-photos")
    seed = 0
    for split, n in (("train", 8), ("test", 3)):
        for name, colour in COLOURS.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                seed += 1
                colour_photo(colour, seed).save(root / split / name / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_run(colour_photos, tmp_path_factory) -> Path:
    """A run trained for 24 steps on ``colour_photos`` (its test split: 12 photos)."""
    import torch

    from effv2birds import TrainConfig
    from effv2birds.training import train

    out = tmp_path_factory.mktemp("tiny-run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # a high lr without warmup: 24 steps are enough for photo-dependent (not uniform) answers
        train(TrainConfig(data=str(colour_photos), image_size=32, batch_size=8, epochs=8, warmup_epochs=0, lr=0.01,
                          val_fraction=0.25, width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False,
                          log_with="none", cpu=True, cache_dir=str(out / "cache"), output_dir=str(out / "run")))
    finally:
        torch.set_num_threads(threads)
    return out / "run"
