"""load_image_dataset: every source kind and folder layout, splits, per_class, reports, errors."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest

from effv2birds.data import DataError, data_report, load_image_dataset, skipped_files
from effv2birds.data.decode import check_image

# Kaggle original spelling (spaces and hyphens mixed) -> Birds_25 spelling (hyphens)
SPECIES = {"Ruddy Shelduck": "Ruddy-Shelduck", "White-Breasted Waterhen": "White-Breasted-Waterhen",
           "Hoopoe": "Hoopoe"}
PER_CLASS = 6


def _photos(shared: Path, birds25_name: str, n: int, start: int = 0) -> list[Path]:
    files = sorted((shared / "birds25-mini" / "train" / birds25_name).glob("*.jpg"))
    return files[start:start + n]


def _fill(dest: Path, shared: Path, names: dict[str, str], n: int = PER_CLASS, start: int = 0) -> None:
    for folder, b25 in names.items():
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for f in _photos(shared, b25, n, start):
            shutil.copy(f, dest / folder / f.name)


def _all_paths(ds) -> dict[str, list[str]]:
    return {s: ds[s].cast_column("image", datasets.Image(decode=False))["image"] for s in ds}


def _check_disjoint(ds) -> None:
    seen: dict[str, str] = {}
    for split, values in _all_paths(ds).items():
        for v in values:
            _, digest = check_image(v)
            assert digest not in seen or seen[digest] == split, f"{v['path']} leaks into {split} from {seen[digest]}"
            seen[digest] = split


@pytest.fixture()
def kaggle_original(tmp_path, shared_data) -> Path:
    root = tmp_path / "25-indian-bird-species" / "training_set"
    _fill(root, shared_data, SPECIES)
    return tmp_path / "25-indian-bird-species"


def test_kaggle_original_layout_spaces_and_hyphens(kaggle_original):
    ds = load_image_dataset(kaggle_original, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert list(ds) == ["train", "validation", "test"]
    names = ds["train"].features["label"].names
    assert names == ["Hoopoe", "Ruddy Shelduck", "White-Breasted Waterhen"]  # the folder names, as on disk
    assert isinstance(ds["train"].features["image"], datasets.Image)
    total = sum(ds[s].num_rows for s in ds)
    assert total == 3 * PER_CLASS
    for s in ds:  # stratified: every class in every split
        assert sorted(set(ds[s]["label"])) == [0, 1, 2], s
    _check_disjoint(ds)
    img = ds["train"][0]["image"]
    assert isinstance(img, PIL.Image.Image) and img.size == (256, 256)
    assert "carved from train" in " ".join(data_report(ds)["notes"])


def test_nested_training_set_gives_same_names_and_ids(tmp_path, shared_data, kaggle_original):
    nested = tmp_path / "nested" / "training_set" / "training_set"
    _fill(nested, shared_data, SPECIES)
    a = load_image_dataset(kaggle_original, seed=1)
    b = load_image_dataset(tmp_path / "nested", seed=1)
    assert a["train"].features["label"].names == b["train"].features["label"].names
    assert sorted(a["train"]["label"]) == sorted(b["train"]["label"])


def test_birds25_layout_ignores_duplicated_valid_and_keeps_test(tmp_path, shared_data):
    root = tmp_path / "Birds_25"
    b25 = {v: v for v in SPECIES.values()}
    _fill(root / "train", shared_data, b25, n=8)
    _fill(root / "valid", shared_data, b25, n=4)  # byte copies of train, as in the real data
    _fill(root / "test", shared_data, b25, n=3, start=20)
    ds = load_image_dataset(tmp_path, val_fraction=0.25, seed=0)
    report = data_report(ds)
    assert any("validation split ignored" in n for n in report["notes"])
    assert ds["test"].num_rows == 9  # the given test split is kept as is
    assert ds["train"].num_rows + ds["validation"].num_rows == 24
    assert ds["validation"].num_rows == 6
    _check_disjoint(ds)
    assert ds["train"].features["label"].names == ["Hoopoe", "Ruddy-Shelduck", "White-Breasted-Waterhen"]


def test_test_file_duplicated_in_train_is_removed_from_train(tmp_path, shared_data):
    root = tmp_path / "data"
    b25 = {v: v for v in SPECIES.values()}
    _fill(root / "train", shared_data, b25, n=6)
    _fill(root / "test", shared_data, b25, n=2)  # the first two of each class: also in train
    ds = load_image_dataset(root, seed=0)
    assert ds["test"].num_rows == 6
    assert sum(ds[s].num_rows for s in ("train", "validation")) == 12
    assert len(data_report(ds)["duplicates"]) == 6
    _check_disjoint(ds)


def test_small_usable_validation_split_is_kept(tmp_path, shared_data):
    root = tmp_path / "data"
    b25 = {v: v for v in SPECIES.values()}
    _fill(root / "train", shared_data, b25, n=5)
    _fill(root / "val", shared_data, b25, n=2, start=10)
    ds = load_image_dataset(root, seed=0)
    assert ds["validation"].num_rows == 6 and ds["train"].num_rows + ds["test"].num_rows == 15


def test_generic_tree_with_odd_names_and_non_images(tmp_path, shared_data):
    _fill(tmp_path / "photos", shared_data, {"ruddy_shelduck": "Ruddy-Shelduck", "my birds": "Hoopoe"}, n=4)
    (tmp_path / "photos" / "my birds" / "notes.txt").write_text("not a photo")
    (tmp_path / "photos" / "my birds" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds = load_image_dataset(tmp_path / "photos", val_fraction=0.25, test_fraction=0.25)
    assert ds["train"].features["label"].names == ["my birds", "ruddy_shelduck"]
    assert [Path(p).name for p, _ in skipped_files(ds)] == ["broken.jpg"]
    assert any(Path(i["path"]).name == "notes.txt" for i in data_report(ds)["ignored"])
    assert sum(ds[s].num_rows for s in ds) == 8


def test_per_class_max_samples_and_seed(shared_data):
    mini = shared_data / "birds25-mini"
    ds = load_image_dataset(mini, per_class=10, seed=3)
    counts = np.bincount(ds["train"]["label"], minlength=25)
    assert counts.tolist() == [10] * 25
    assert ds["test"].num_rows == 500  # the given test split is untouched by per_class
    again = load_image_dataset(mini, per_class=10, seed=3)
    other = load_image_dataset(mini, per_class=10, seed=4)
    paths = lambda d: [v["path"] for v in _all_paths(d)["train"]]  # noqa: E731
    assert paths(ds) == paths(again) and paths(ds) != paths(other)
    small = load_image_dataset(mini, max_samples=50, seed=0)
    assert {s: small[s].num_rows for s in small} == {"train": 50, "validation": 50, "test": 50}
    assert len(set(small["train"]["label"])) == 25  # stratified subsample


def test_existing_dataset_with_custom_columns_and_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L") for _ in range(30)]
    labels = ["zero", "one", "two"] * 10
    raw = datasets.Dataset.from_dict({"pic": images, "kind": labels, "extra": list(range(30))})
    with pytest.raises(DataError, match="image_column='img'.*columns are pic, kind, extra"):
        load_image_dataset(raw, image_column="img", label_column="kind")
    ds = load_image_dataset(raw, image_column="pic", label_column="kind", val_fraction=0.2, test_fraction=0.2)
    assert ds["train"].column_names == ["image", "label"]
    assert ds["train"].features["label"].names == ["one", "two", "zero"]
    from effv2birds.data import cache_split

    cached = cache_split(ds["train"], 8, cache_dir=tmp_path)
    assert cached.images.shape[1] == 3  # grayscale comes out as RGB
    assert bool((cached.images[:, 0] == cached.images[:, 1]).all())


def test_datasetdict_and_save_to_disk_sources(tmp_path):
    src = load_image_dataset("synthetic", synthetic_size=50)
    renamed = datasets.DatasetDict({"train": src["train"], "valid": src["validation"], "test": src["test"]})
    ds = load_image_dataset(renamed)
    assert ds["validation"].num_rows == src["validation"].num_rows
    renamed.save_to_disk(str(tmp_path / "saved"))
    again = load_image_dataset(str(tmp_path / "saved"))
    assert again["test"]["label"] == src["test"]["label"]


def test_synthetic_source_uses_seed_and_size():
    a = load_image_dataset("synthetic", synthetic_size=60, seed=5)
    b = load_image_dataset("synthetic", synthetic_size=60, seed=5)
    c = load_image_dataset("synthetic", synthetic_size=60, seed=6)
    raw = lambda d: d["train"].cast_column("image", datasets.Image(decode=False))["image"][0]["bytes"]  # noqa: E731
    assert a["train"].num_rows == 60 and raw(a) == raw(b) and raw(a) != raw(c)
    assert data_report(a)["kind"] == "synthetic" and skipped_files(a) == []


def test_missing_folder_and_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="does not exist"):
        load_image_dataset("./no/such/folder")
    (tmp_path / "empty" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        load_image_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="val_fraction"):
        load_image_dataset("synthetic", val_fraction=1.5)
    with pytest.raises(DataError, match="per_class"):
        load_image_dataset("synthetic", per_class=0)
    with pytest.raises(DataError, match="cannot load images from a int"):
        load_image_dataset(42)


def test_unknown_hub_id_fails_fast_offline():
    start = time.perf_counter()
    with pytest.raises(DataError, match="effv2birds-no-such-user/made-up-birds"):
        load_image_dataset("effv2birds-no-such-user/made-up-birds-42")
    assert time.perf_counter() - start < 15


def test_unchanged_files_are_not_checked_again(tmp_path, shared_data, monkeypatch):
    import effv2birds.data.sources as sources

    _fill(tmp_path / "photos", shared_data, {"Hoopoe": "Hoopoe", "Sarus Crane": "Sarus-Crane"}, n=4)
    (tmp_path / "photos" / "Hoopoe" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really")
    calls = {"n": 0}
    real = sources.check_image

    def counting(value):
        calls["n"] += 1
        return real(value)

    monkeypatch.setattr(sources, "check_image", counting)
    first = load_image_dataset(tmp_path / "photos", cache_dir=tmp_path / "cache")
    assert calls["n"] == 9
    again = load_image_dataset(tmp_path / "photos", cache_dir=tmp_path / "cache")
    assert calls["n"] == 9 and skipped_files(again) == skipped_files(first)
    assert [ds.num_rows for ds in again.values()] == [ds.num_rows for ds in first.values()]
    shutil.copy(_photos(shared_data, "Hoopoe", 1, start=30)[0], tmp_path / "photos" / "Hoopoe" / "bad.jpg")
    os.utime(tmp_path / "photos" / "Hoopoe" / "bad.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))
    fixed = load_image_dataset(tmp_path / "photos", cache_dir=tmp_path / "cache")
    assert calls["n"] == 10 and skipped_files(fixed) == []


def test_spelling_variants_across_splits_are_one_class_with_the_training_name(tmp_path, shared_data):
    root = tmp_path / "data"
    _fill(root / "train", shared_data, {"Ruddy-Shelduck": "Ruddy-Shelduck", "Hoopoe": "Hoopoe"}, n=4)
    _fill(root / "test", shared_data, {"Ruddy Shelduck": "Ruddy-Shelduck", "hoopoe": "Hoopoe"}, n=2, start=10)
    ds = load_image_dataset(root, seed=0)
    names = ds["train"].features["label"].names
    assert names == ["Hoopoe", "Ruddy-Shelduck"]
    test_paths = [Path(v["path"]) for v in _all_paths(ds)["test"]]
    assert [names[label] for label in ds["test"]["label"]] == [
        {"hoopoe": "Hoopoe", "Ruddy Shelduck": "Ruddy-Shelduck"}[p.parent.name] for p in test_paths]


def test_two_folders_with_one_key_in_a_split_are_an_error(tmp_path):
    for name in ("cat_1", "cat-1", "dog"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        PIL.Image.new("RGB", (8, 8), (len(name) * 20, 0, 0)).save(tmp_path / "photos" / name / "a.png")
    with pytest.raises(DataError, match="'cat-1' and 'cat_1'"):
        load_image_dataset(tmp_path / "photos")


def test_a_classlabel_keeps_its_names_and_order():
    images = [PIL.Image.new("RGB", (8, 8), (i * 9, 0, 0)) for i in range(12)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["zebra", "Ant_x"])})
    raw = datasets.Dataset.from_dict({"image": images, "label": [0, 1] * 6}, features=feats)
    ds = load_image_dataset(raw, val_fraction=0.2, test_fraction=0.2)
    assert ds["train"].features["label"].names == ["zebra", "Ant_x"]
    assert sorted(set(ds["train"]["label"])) == [0, 1]
