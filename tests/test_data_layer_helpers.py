"""The data layer's helpers: atomic writes, the undecoded-image view, the explicit report, scoped
offline mode, and the one "load this config's data" function."""

from __future__ import annotations

import pickle
import threading

import datasets
import numpy as np
import PIL.Image
import pytest

from effv2birds.atomic import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text, temporary_path
from effv2birds.data import DataError, data_report, drop_cross_split_duplicates, load_image_dataset, skipped_files
from effv2birds.data.decode import check_image, raw_images, undecoded
from effv2birds.data.reported import ReportedDatasetDict


def test_atomic_writes_leave_only_the_target(tmp_path):
    atomic_write_text(tmp_path / "a" / "t.txt", "text")
    atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\xff")
    atomic_write_json(tmp_path / "a" / "j.json", {"x": [1, None]}, indent=1)
    assert (tmp_path / "a" / "t.txt").read_text() == "text"
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "a" / "j.json").read_text() == '{\n "x": [\n  1,\n  null\n ]\n}'
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.bin", "j.json", "t.txt"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "weights.npz"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a new fi")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.npz"]
    with atomic_path(target) as tmp:  # a writer that wants a name with the suffix (np.savez adds .npz otherwise)
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and tmp.name.startswith(".")
        np.savez(tmp, x=np.arange(4))
    assert np.load(target)["x"].tolist() == [0, 1, 2, 3] and [p.name for p in tmp_path.iterdir()] == ["weights.npz"]


def test_temporary_names_differ_between_threads_and_calls(tmp_path):
    names = set()

    def grab():
        names.add(temporary_path(tmp_path / "m.json"))

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(names) == 8


def test_undecoded_and_raw_images(tmp_path):
    PIL.Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    ds = datasets.Dataset.from_dict({"image": [str(tmp_path / "red.png"), str(tmp_path / "red.png")]},
                                    features=datasets.Features({"image": datasets.Image()}))
    assert undecoded(ds).features["image"] == datasets.Image(decode=False)
    assert ds.features["image"].decode  # the split itself is untouched
    raw = raw_images(ds)
    assert [v["path"] for v in raw] == [str(tmp_path / "red.png")] * 2 and raw[0]["bytes"] is None
    assert check_image(raw[0])[0] is None


def test_with_report_returns_the_same_data_and_a_plain_report():
    ds = load_image_dataset("synthetic", synthetic_size=60, seed=2)
    plain, report = load_image_dataset("synthetic", synthetic_size=60, seed=2, with_report=True)
    assert type(plain) is datasets.DatasetDict and isinstance(ds, ReportedDatasetDict)
    assert type(report) is dict and report == data_report(ds) == data_report(report)
    assert skipped_files(report) == skipped_files(ds) == []
    for split in ("train", "validation", "test"):
        assert plain[split]["label"] == ds[split]["label"]
        assert raw_images(plain[split])[:3] == raw_images(ds[split])[:3]
    with pytest.raises(DataError, match="with_report=True"):
        data_report(plain)  # the explicit form hands the report over instead of attaching it
    assert skipped_files(plain) == [] and skipped_files({"train": plain["train"]}) == []


def test_the_returned_report_survives_copies_and_pickling():
    ds = load_image_dataset("synthetic", synthetic_size=50)
    again = pickle.loads(pickle.dumps(ds))
    assert isinstance(again, ReportedDatasetDict) and data_report(again) == data_report(ds)
    assert data_report(ds.with_format("numpy"))["kind"] == "synthetic"  # a deep copy keeps it
    with pytest.raises(DataError, match="did not come from load_image_dataset"):
        data_report(ds.select_columns(["label"]))  # a transformed copy is a plain DatasetDict
    kept, dropped = drop_cross_split_duplicates(ds)  # the function keeps the kind and the report up to date
    assert isinstance(kept, ReportedDatasetDict) and data_report(kept)["rows"] == {s: kept[s].num_rows for s in kept}
    assert data_report(kept)["near_duplicates"] == dropped and data_report(ds)["near_duplicates"] == []


def test_hub_offline_is_scoped_and_restored(monkeypatch):
    import huggingface_hub.constants as hub_constants

    from effv2birds.data import sources

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    with pytest.raises(ValueError):
        with sources._hub_offline():
            assert datasets.config.HF_HUB_OFFLINE and hub_constants.HF_HUB_OFFLINE and hub_constants.is_offline_mode()
            raise ValueError("a failed load")
    assert (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE) == before
    import os

    assert "HF_HUB_OFFLINE" not in os.environ  # never the process environment


def test_hub_offline_blocks_of_two_threads_take_turns_so_neither_goes_online_early():
    """Without turns, the block that ends first restores the saved value while the other is still inside."""
    import threading
    import time

    from effv2birds.data import sources

    before = datasets.config.HF_HUB_OFFLINE
    first_in, first_out, seen = threading.Event(), threading.Event(), []

    def first():
        with sources._hub_offline():
            first_in.set()
            time.sleep(0.2)
        first_out.set()

    def second():
        first_in.wait(5)
        with sources._hub_offline():
            first_out.wait(5)
            seen.append(datasets.config.HF_HUB_OFFLINE)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [True] and datasets.config.HF_HUB_OFFLINE == before


def test_unreachable_hub_restores_offline_mode_after_the_error(monkeypatch):
    import huggingface_hub.constants as hub_constants

    from effv2birds.data import sources

    monkeypatch.setattr(sources, "_hub_reachable", lambda timeout=3.0: False)
    before = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE)
    with pytest.raises(DataError, match="not reachable from this machine and no cached copy"):
        load_image_dataset("effv2birds-no-such-user/made-up-birds-43")
    assert (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE) == before


def test_load_config_dataset_is_load_image_dataset_with_the_config(tmp_path, monkeypatch):
    from effv2birds import TrainConfig, data
    from effv2birds.training.setup import load_config_dataset

    cfg = TrainConfig(synthetic_size=40, max_samples=30, per_class=1, seed=3, val_fraction=0.2, cache_dir=str(tmp_path))
    seen = []
    real = data.load_image_dataset

    def spy(*args, **kwargs):
        seen.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "load_image_dataset", spy)
    ds, report = load_config_dataset(cfg)
    expected = dict(image_column=None, label_column=None, per_class=1, max_samples=30, val_fraction=0.2,
                    test_fraction=0.1, seed=3, synthetic_size=40, num_proc=None, cache_dir=str(tmp_path),
                    with_report=True)
    assert seen == [(("synthetic",), expected)]
    assert ds["train"].num_rows == 25 and report["rows"]["train"] == 25
    load_config_dataset(cfg, cache_dir=tmp_path / "other")
    assert seen[-1][1]["cache_dir"] == tmp_path / "other"
