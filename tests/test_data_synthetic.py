"""Built-in synthetic birds: 25 named classes, deterministic, fast, learnable, and resolution-sensitive."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from effv2birds.data import BIRD_SPECIES, FINE_TWINS, cache_split, draw_birds, synthetic_birds, to_model_input


def test_deterministic_balanced_and_fast():
    start = time.process_time()  # CPU time: not inflated when other jobs share the machine
    a = synthetic_birds(1000, seed=7)
    elapsed = time.process_time() - start
    assert elapsed < 15, f"generating 1,500 images took {elapsed:.1f}s of CPU time"
    assert a["train"].features["label"].names == list(BIRD_SPECIES)
    assert np.bincount(a["train"]["label"]).tolist() == [40] * 25
    b = draw_birds(np.arange(25), np.random.default_rng(3))
    c = draw_birds(np.arange(25), np.random.default_rng(3))
    d = draw_birds(np.arange(25), np.random.default_rng(4))
    assert (b == c).all() and not (b == d).all()
    assert a["train"][0]["image"].size == (64, 64)


def test_twins_differ_only_in_fine_detail():
    names = list(BIRD_SPECIES)
    plain, striped = (names.index(n) for n in FINE_TWINS[0])
    # same random draws for both twins: the pictures differ only inside the striped body
    img_p = draw_birds(np.array([plain]), np.random.default_rng(1)).astype(float)
    img_s = draw_birds(np.array([striped]), np.random.default_rng(1)).astype(float)
    diff = np.abs(img_p - img_s)
    assert diff.max() > 30  # clearly different at full resolution
    small = lambda x: x.reshape(32, 2, 32, 2, 3).mean((1, 3))  # noqa: E731 - 2x2 average = 32 px
    # at 32 px the stripes average away; only a few pixels at the wing's edge still differ
    assert np.abs(small(img_p) - small(img_s)).mean() < 0.3 * diff.mean()


class _PatchNet(nn.Module):
    """A tiny bag-of-patches classifier: a patch-p stem keeps the same cost at 32 px (p=1) and
    128 px (p=4), so any accuracy gain at 128 px comes from the extra pixels."""

    def __init__(self, patch: int, num_classes: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, patch, stride=patch)
        self.mix = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        h = F.relu(self.mix(F.relu(self.stem(x))))
        return self.fc(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def _fit(train, test, classes, patch, epochs, seed=0) -> float:
    torch.manual_seed(seed)
    keep, keep_t = torch.isin(train.labels, classes), torch.isin(test.labels, classes)
    x = to_model_input(train.images[keep], mean=(0.5,) * 3, std=(0.25,) * 3)
    y = train.labels[keep]
    xt = to_model_input(test.images[keep_t], mean=(0.5,) * 3, std=(0.25,) * 3)
    model = _PatchNet(patch, 25)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(32):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (model(xt).argmax(1) == test.labels[keep_t]).float().mean().item()


@pytest.fixture()
def one_thread():
    # tiny models: extra threads only wait for each other (badly so on a shared 2-core machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory):
    ds = synthetic_birds(800, seed=0)
    root = tmp_path_factory.mktemp("cache")
    return {s: (cache_split(ds["train"], s, cache_dir=root), cache_split(ds["test"], s, cache_dir=root))
            for s in (32, 128)}


def test_learnable_at_32px_far_above_chance(synthetic_cache, one_thread):
    train, test = synthetic_cache[32]
    acc = _fit(train, test, torch.arange(25), patch=1, epochs=8)
    assert acc > 0.4, f"32 px accuracy {acc:.2f} (chance 0.04)"


def test_128px_beats_32px_on_fine_detail_twins(synthetic_cache, one_thread):
    names = list(BIRD_SPECIES)
    twins = torch.tensor([names.index(n) for pair in FINE_TWINS for n in pair])
    acc32 = _fit(*synthetic_cache[32], twins, patch=1, epochs=10)
    acc128 = _fit(*synthetic_cache[128], twins, patch=4, epochs=10)
    assert acc128 > acc32 + 0.15, f"128 px {acc128:.2f} vs 32 px {acc32:.2f}"
