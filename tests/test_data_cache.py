"""cache_split: reuse without decoding, invalidation, atomic builds, and equality with the uncached path."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import effv2birds.data.decode as decode_module
from effv2birds.data import DataError, cache_split, decode_resize, load_image_dataset, make_loader, to_model_input


@pytest.fixture()
def photos(tmp_path, shared_data):
    """A small real-photo folder (3 classes x 5) copied to a temp dir, so tests may edit files."""
    root = tmp_path / "photos"
    for cls in ("Hoopoe", "Sarus-Crane", "Indian-Roller"):
        (root / cls).mkdir(parents=True)
        for f in sorted((shared_data / "birds25-mini" / "train" / cls).glob("*.jpg"))[:5]:
            shutil.copy(f, root / cls / f.name)
    return root


@pytest.fixture()
def count_decodes(monkeypatch):
    calls = {"n": 0}
    real = decode_module.decode_resize

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_resize", counting)
    return calls


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_reuse_does_no_decoding(photos, tmp_path, count_decodes):
    ds = load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)
    cache = tmp_path / "cache"
    first = cache_split(ds["train"], 32, cache_dir=cache)
    assert count_decodes["n"] == ds["train"].num_rows == len(first)
    count_decodes["n"] = 0
    again = cache_split(load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)["train"], 32, cache_dir=cache)
    assert count_decodes["n"] == 0
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert again.class_names == ["Hoopoe", "Indian-Roller", "Sarus-Crane"] and again.image_size == 32
    assert len(_entries(cache)) == 1


def test_size_policy_split_and_file_changes_invalidate(photos, tmp_path, count_decodes):
    ds = load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)
    cache = tmp_path / "cache"
    a = cache_split(ds["train"], 32, cache_dir=cache)
    b = cache_split(ds["train"], 48, cache_dir=cache)
    c = cache_split(ds["train"], 32, resize="resize_crop", cache_dir=cache)
    d = cache_split(ds["test"], 32, cache_dir=cache)
    assert len({a.path, b.path, c.path, d.path}) == 4 and b.images.shape[-1] == 48
    assert count_decodes["n"] == 3 * ds["train"].num_rows + ds["test"].num_rows
    # the same path with new content is a new entry
    some = Path(ds["train"].cast_column("image", datasets.Image(decode=False))[0]["image"]["path"])
    other = sorted(some.parent.glob("*.jpg"))[-1]
    shutil.copy(other if other != some else sorted(some.parent.glob("*.jpg"))[0], some)
    os.utime(some, ns=(time.time_ns(), time.time_ns() + 10**9))
    count_decodes["n"] = 0
    e = cache_split(ds["train"], 32, cache_dir=cache)
    assert e.path != a.path and count_decodes["n"] == ds["train"].num_rows


def test_interrupted_build_leaves_no_complete_entry(photos, tmp_path, monkeypatch):
    ds = load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)
    cache = tmp_path / "cache"
    real = decode_module.decode_resize
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the build
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_resize", flaky)
    with pytest.raises(KeyboardInterrupt):
        cache_split(ds["train"], 32, cache_dir=cache)
    assert list(cache.iterdir()) == []  # neither an entry nor a temporary folder is left
    monkeypatch.setattr(decode_module, "decode_resize", real)
    done = cache_split(ds["train"], 32, cache_dir=cache)
    assert len(done) == ds["train"].num_rows


def test_sigkill_during_build_is_not_mistaken_for_a_cache(photos, tmp_path, count_decodes):
    cache = tmp_path / "cache"
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent(f"""
        import time
        import effv2birds.data.decode as d
        from effv2birds.data import cache_split, load_image_dataset
        real = d.decode_resize
        def slow(*a, **k):
            time.sleep(0.5)
            return real(*a, **k)
        d.decode_resize = slow
        ds = load_image_dataset({str(photos)!r}, val_fraction=0.2, test_fraction=0.2)
        print("start", flush=True)
        cache_split(ds["train"], 32, cache_dir={str(cache)!r}, num_proc=1)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "start"
        deadline = time.time() + 60
        while not list(cache.glob(".tmp-*")) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(cache.glob(".tmp-*")), "the build never started"
    assert _entries(cache) == []
    ds = load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)
    built = cache_split(ds["train"], 32, cache_dir=cache)
    assert count_decodes["n"] == ds["train"].num_rows == len(built)


def test_damaged_entry_is_rebuilt(photos, tmp_path, count_decodes):
    ds = load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)
    cache = tmp_path / "cache"
    good = cache_split(ds["train"], 32, cache_dir=cache)
    for arrow in (good.path / "data").glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:100])
    count_decodes["n"] = 0
    again = cache_split(ds["train"], 32, cache_dir=cache)
    assert count_decodes["n"] == ds["train"].num_rows
    assert torch.equal(good.images, again.images)


class _Uncached(Dataset):
    """The usual path: decode each file every time it is read."""

    def __init__(self, split, size, resize):
        self.raw = split.cast_column("image", datasets.Image(decode=False))
        self.size, self.resize = size, resize

    def __len__(self):
        return self.raw.num_rows

    def __getitem__(self, i):
        row = self.raw[i]
        return torch.from_numpy(decode_resize(row["image"], self.size, self.resize)), row["label"]


@pytest.mark.parametrize("resize", ["resize", "resize_crop"])
def test_cached_batches_equal_uncached_batches(photos, tmp_path, resize):
    ds = load_image_dataset(photos, val_fraction=0.2, test_fraction=0.2)
    cached = cache_split(ds["train"], 40, resize=resize, cache_dir=tmp_path / "cache")
    kw = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=32)
    fast = [(to_model_input(x, **kw), y) for x, y in make_loader(cached, 4, shuffle=False)]
    slow = [(to_model_input(x, **kw), y) for x, y in DataLoader(_Uncached(ds["train"], 40, resize), batch_size=4)]
    assert len(fast) == len(slow) == 3
    for (a, ya), (b, yb) in zip(fast, slow):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_bad_arguments_and_empty_split(tmp_path):
    ds = load_image_dataset("synthetic", synthetic_size=25)
    empty = cache_split(ds["train"].select([]), 8, cache_dir=tmp_path)
    assert len(empty) == 0 and empty.images.shape == (0, 3, 8, 8)
    with pytest.raises(DataError, match="image_size"):
        cache_split(ds["train"], 0, cache_dir=tmp_path)
    with pytest.raises(DataError, match="resize='squash'"):
        cache_split(ds["train"], 8, resize="squash", cache_dir=tmp_path)
    with pytest.raises(DataError, match="datasets.Dataset"):
        cache_split(ds, 8, cache_dir=tmp_path)


def test_progress_bar_names_the_split_as_asked_and_the_name_is_not_in_the_key(tmp_path, capfd):
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(tmp_path / "photos" / cls / f"{i}.png")
    carved = load_image_dataset(tmp_path / "photos", val_fraction=0.25)["validation"]
    assert carved.split == "train"  # carved out of the folder's train split: datasets keeps that name
    was = is_progress_bar_enabled()
    enable_progress_bar()
    try:
        named = cache_split(carved, 16, cache_dir=tmp_path / "cache", name="validation")
    finally:
        if not was:
            disable_progress_bar()
    assert "caching validation at 16px" in capfd.readouterr().err
    assert cache_split(carved, 16, cache_dir=tmp_path / "cache").path == named.path
