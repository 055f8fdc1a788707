"""Every odd file in ../shared/data (manifest-driven): decoded to upright RGB, or excluded and reported."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from effv2birds.data import cache_split, check_image, decode_resize, load_image_dataset, open_rgb, skipped_files


def _manifest(shared: Path) -> list[dict[str, str]]:
    with open(shared / "odd-images" / "MANIFEST.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _reference(shared: Path, row: dict[str, str]) -> Path:
    # The lossless PNG copy ("really_png") holds the original pixels of the photo it came from.
    stem = Path(row["derived_from"]).stem
    return shared / "odd-images" / row["label"] / f"{stem}__really_png.jpg"


def test_every_manifest_file(shared_data):
    rows = _manifest(shared_data)
    assert len(rows) >= 20
    for row in rows:
        path = shared_data / "odd-images" / row["relpath"]
        reason, digest = check_image(path)
        if "truncated" in row["what"].lower():
            assert reason is not None and "truncated" in reason, row["relpath"]
            with pytest.raises(OSError):
                decode_resize(path, 32)
            continue
        assert reason is None, (row["relpath"], reason)
        img = open_rgb(path)
        assert img.mode == "RGB", row["relpath"]
        size = 16 if "16x16" in row["what"] else 32  # compare a tiny photo at its own size
        got = decode_resize(path, size).astype(np.float64)
        ref = decode_resize(_reference(shared_data, row), size).astype(np.float64)
        if "gray" in row["what"].lower():  # compare luminance only
            assert np.allclose(got[0], got[1]) and np.allclose(got[1], got[2]), row["relpath"]
            ref = np.broadcast_to(0.299 * ref[0] + 0.587 * ref[1] + 0.114 * ref[2], ref.shape)
        if "transparent" in row["what"]:  # top 64 of 256 rows are transparent: white background
            assert got[:, :7].min() > 240, row["relpath"]
            got, ref = got[:, 9:], ref[:, 9:]
        diff = np.abs(got - ref).mean()
        assert diff < (10 if size == 16 else 6), (row["relpath"], row["what"], diff)


def test_exif_orientation_is_applied(shared_data):
    row = next(r for r in _manifest(shared_data) if "orient" in r["what"].lower())
    path = shared_data / "odd-images" / row["relpath"]
    ref = decode_resize(_reference(shared_data, row), 32).astype(float)
    upright = decode_resize(path, 32).astype(float)
    raw = np.asarray(PIL.Image.open(path).convert("RGB").resize((32, 32))).transpose(2, 0, 1).astype(float)
    assert np.abs(upright - ref).mean() < 6 < np.abs(raw - ref).mean()


def test_odd_folder_through_load_and_cache(shared_data, tmp_path, caplog):
    rows = _manifest(shared_data)
    bad = {r["relpath"] for r in rows if "truncated" in r["what"].lower()}
    with caplog.at_level(logging.WARNING, logger="effv2birds.data"):
        ds = load_image_dataset(shared_data / "odd-images", val_fraction=0.1, test_fraction=0.1)
    skipped = {str(Path(p).relative_to(shared_data / "odd-images")) for p, _ in skipped_files(ds)}
    assert skipped == bad
    assert f"{len(bad)} undecodable" in caplog.text  # the one-line count
    assert sum(ds[s].num_rows for s in ds) == len(rows) - len(bad)
    for split in ds:
        cached = cache_split(ds[split], 32, cache_dir=tmp_path)
        assert len(cached) == ds[split].num_rows and cached.skipped == []
        assert cached.images.shape[1:] == (3, 32, 32)


def test_camera_trap_odd_files(shared_data, tmp_path):
    folder = shared_data / "camera-trap-odd"
    files = sorted(folder.glob("*.jpg"))
    results = {f.name: check_image(f)[0] for f in files}
    assert [n for n, r in results.items() if r is not None] == ["african_elephants_truncated_file.jpg"]
    assert "truncated" in results["african_elephants_truncated_file.jpg"]
    # the EXIF-rotated copy comes out in the same orientation as the unrotated CMYK copy
    exif = decode_resize(folder / "african_elephants_with_exif_orientation.jpg", 32).astype(float)
    cmyk = decode_resize(folder / "african_elephants_cmyk.jpg", 32).astype(float)
    assert open_rgb(folder / "african_elephants_with_exif_orientation.jpg").size == (2048, 1536)
    assert np.abs(exif - cmyk).mean() < 8
    bw = decode_resize(folder / "african_elephants_bw.jpg", 32)
    assert (bw[0] == bw[1]).all() and (bw[1] == bw[2]).all()
    # a bad file that reaches the cache without load_image_dataset's check is left out, not fatal
    raw = datasets.Dataset.from_dict(
        {"image": [str(f) for f in files], "label": list(range(len(files)))},
        features=datasets.Features({"image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=[f.stem for f in files])}),
    )
    cached = cache_split(raw, 16, cache_dir=tmp_path)
    assert len(cached) == len(files) - 1
    assert [Path(p).name for p, _ in cached.skipped] == ["african_elephants_truncated_file.jpg"]
    bad_label = [f.name for f in files].index("african_elephants_truncated_file.jpg")
    assert bad_label not in cached.labels.tolist()


def test_draft_mode_large_jpeg_matches_full_decode(shared_data):
    row = next(r for r in _manifest(shared_data) if "3000x2000" in r["what"])
    path = shared_data / "odd-images" / row["relpath"]
    fast = decode_resize(path, 64).astype(float)
    full = np.asarray(PIL.Image.open(path).convert("RGB").resize((64, 64), PIL.Image.BILINEAR))
    assert np.abs(fast - full.transpose(2, 0, 1)).mean() < 3


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    img = PIL.Image.fromarray(arr)
    assert img.mode.startswith("I")
    out = np.asarray(open_rgb(img))
    assert out.shape == (64, 64, 3) and out.min() == 0 and out.max() == 255 and 100 < out.mean() < 155
