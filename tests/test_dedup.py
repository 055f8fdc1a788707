"""Near-duplicate detection: dHash over flips/rotations, on files written here, and the data-layer uses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from effv2birds.data import (NEAR_DUPLICATE_DISTANCE, CachedSplit, data_report, dhash, dihedral_hashes,
                             drop_cross_split_duplicates, hash_images, load_image_dataset, near_duplicates,
                             nearest_hashes, read_train_hashes, write_train_hashes)
from effv2birds.data.dedup import hamming_distance

T = PIL.Image.Transpose


def _scene(seed: int, size: int = 200) -> PIL.Image.Image:
    """A photo-like picture (smooth coloured blobs), different for each seed: unrelated scenes are
    more than 6 bits apart in any orientation."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.full((size, size, 3), rng.uniform(60, 190, 3))
    for _ in range(8):
        cx, cy = rng.uniform(0, 1, 2)
        r = rng.uniform(0.05, 0.25)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2)[..., None] * rng.uniform(-150, 150, 3)
    return PIL.Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _variants(photo: PIL.Image.Image, other: PIL.Image.Image, folder: Path) -> dict[str, Path]:
    """The photo and its copies, written as files: the hashes are taken from what is read back."""
    files = {
        "photo.png": photo,
        "flip.png": photo.transpose(T.FLIP_LEFT_RIGHT),
        "rot90.png": photo.transpose(T.ROTATE_90),
        "rot180_flip.png": photo.transpose(T.ROTATE_180).transpose(T.FLIP_TOP_BOTTOM),
        "reencoded.jpg": photo,
        "smaller.jpg": photo.resize((photo.width // 2, photo.height // 2)),
        "other.png": other,
    }
    paths = {}
    for name, img in files.items():
        paths[name.split(".")[0]] = folder / name
        img.save(folder / name, quality=80) if name.endswith(".jpg") else img.save(folder / name)
    return paths


def _check_copies_found_and_other_not(paths: dict[str, Path]) -> None:
    plain = {k: dhash(p) for k, p in paths.items()}
    photo8 = dihedral_hashes(paths["photo"])
    assert int(photo8[0]) == plain["photo"]
    assert plain["flip"] != plain["photo"]  # a flip changes the plain hash ...
    for name in ("flip", "rot90", "rot180_flip"):  # ... but one of the 8 orientations matches it exactly
        assert int(hamming_distance(plain[name], photo8).min()) == 0, name
    for name in ("reencoded", "smaller"):
        assert int(hamming_distance(plain[name], photo8).min()) <= NEAR_DUPLICATE_DISTANCE, name
    assert int(hamming_distance(plain["other"], photo8).min()) > 2 * NEAR_DUPLICATE_DISTANCE
    query = np.array([plain[k] for k in paths], dtype=np.uint64)
    found = near_duplicates(query, photo8[None])
    assert dict(zip(paths, found.tolist())) == {k: k != "other" for k in paths}


def test_dhash_finds_flips_rotations_and_reencodes_of_a_generated_photo(tmp_path):
    _check_copies_found_and_other_not(_variants(_scene(1), _scene(2), tmp_path))


def test_dhash_on_real_photos(tmp_path, shared_data):
    files = sorted((shared_data / "birds25-mini" / "train" / "Hoopoe").glob("*.jpg"))
    other = sorted((shared_data / "birds25-mini" / "train" / "Sarus-Crane").glob("*.jpg"))[0]
    with PIL.Image.open(files[0]) as photo, PIL.Image.open(other) as unrelated:
        _check_copies_found_and_other_not(_variants(photo.convert("RGB"), unrelated.convert("RGB"), tmp_path))


def test_hash_inputs_agree_and_nearest_reports_the_row():
    photo = _scene(3, 32)
    chw = torch.from_numpy(np.asarray(photo).transpose(2, 0, 1).copy())
    assert dhash(photo) == dhash(chw) == dhash(chw.numpy()) == dhash(np.asarray(photo))
    ref = hash_images(torch.stack([torch.from_numpy(np.asarray(_scene(s, 32)).transpose(2, 0, 1).copy())
                                   for s in (10, 3, 11)]))
    assert ref.shape == (3, 8) and ref.dtype == np.uint64
    dist, rows = nearest_hashes(dihedral_hashes(photo.transpose(T.ROTATE_270))[None], ref)
    assert dist.tolist() == [0] and rows.tolist() == [1]
    assert nearest_hashes(ref, np.zeros((0, 8), np.uint64))[1].tolist() == [-1, -1, -1]


def test_train_hashes_round_trip(tmp_path):
    images = torch.stack([torch.from_numpy(np.asarray(_scene(s, 16)).transpose(2, 0, 1).copy()) for s in range(4)])
    split = CachedSplit(images, torch.tensor([0, 1, 1, 0]), ["a", "b"], 16)
    path = write_train_hashes(tmp_path / "run", split)
    hashes, labels, meta = read_train_hashes(tmp_path / "run")
    assert path.name == "train_hashes.npz" and hashes.shape == (4, 8) and labels.tolist() == [0, 1, 1, 0]
    assert meta["image_size"] == 16 and meta["class_names"] == ["a", "b"]
    assert np.array_equal(hashes, hash_images(images))
    assert read_train_hashes(tmp_path / "elsewhere") is None


def test_load_image_dataset_drops_cross_split_near_duplicates(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
    for i in range(6):
        _scene(100 + i).save(root / "train" / "ab"[i % 2] / f"{i}.png")
    for i in range(2):  # test holds re-encoded, flipped copies of train photos 0 and 1
        _scene(100 + i).transpose(T.FLIP_LEFT_RIGHT).save(root / "test" / "ab"[i % 2] / f"copy{i}.jpg", quality=85)
    _scene(200).save(root / "test" / "a" / "new.png")
    kept = load_image_dataset(root, val_fraction=0.0, drop_near_duplicates=True)
    report = data_report(kept)
    assert sorted(Path(d["path"]).name for d in report["near_duplicates"]) == ["0.png", "1.png"]
    assert all(d["split"] == "train" and "copy" in d["duplicate_of"] for d in report["near_duplicates"])
    assert kept["train"].num_rows == 4 and kept["test"].num_rows == 3
    plain = load_image_dataset(root, val_fraction=0.0)
    assert plain["train"].num_rows == 6 and data_report(plain)["near_duplicates"] == []
    # the same as a function applied after loading
    again, dropped = drop_cross_split_duplicates(plain)
    assert again["train"].num_rows == 4 and len(dropped) == 2
    assert data_report(again)["rows"]["train"] == 4
