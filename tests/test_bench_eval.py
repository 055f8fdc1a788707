"""benchmarks/eval_throughput.py: a tiny run prints every row and the ratio; an empty folder is a clear error."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_throughput.py"
TINY = ["--image-size", "64", "--batch-size", "2", "--batches", "1", "--windows", "2", "--warmup", "1",
        "--depth-multiplier", "0.1", "--device", "cpu", "--threads", "1"]
ROWS = ("model only", "decode+transform", "pretrained path", "Predictor.predict")


@pytest.fixture(scope="module")
def bench():
    name = "benchmarks_eval_throughput"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def photos(tmp_path) -> Path:
    import PIL.Image

    folder = tmp_path / "photos"
    for i in range(5):  # nested folders, odd sizes, a non-image file beside them
        out = folder / f"class{i % 2}" / f"bird{i}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", (90 + 7 * i, 70), (40 * i, 100, 200 - 30 * i)).save(out, quality=90)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_tiny_run_prints_every_path_and_the_ratio(bench, photos, tmp_path, capsys, one_thread):
    out_json = tmp_path / "rows.json"
    assert bench.main([str(photos), *TINY, "--workers", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out and "torch threads 1" in out and "5 images in" in out
    assert "peak RSS" in out  # CPU: says which memory figure it is
    for name in ROWS:
        line = next(line for line in out.splitlines() if line.startswith(name))
        rate = float(line[len(name):].split()[0])
        assert rate > 0, line
    ratio = re.search(r"ratio pretrained path / model only: ([0-9.]+)", out)
    assert "bottleneck:" in out

    data = json.loads(out_json.read_text())
    rows = {r["path"]: r for r in data["rows"]}
    assert tuple(rows) == ROWS
    expected = rows["pretrained path"]["images_per_s"] / rows["model only"]["images_per_s"]
    assert ratio and float(ratio.group(1)) == pytest.approx(expected, abs=0.006)  # printed with 2 decimals
    for r in rows.values():
        assert r["images_per_s"] > 0 and len(r["window_rates"]) == 2 and r["images_per_window"] == 2
        assert r["peak_memory_mib"] > 0
    assert data["settings"]["image_size"] == 64 and data["settings"]["device"] == "cpu"


def test_no_predictor_and_zero_workers(bench, photos, capsys, one_thread):
    assert bench.main([str(photos), *TINY, "--workers", "0", "--no-predictor", "--channels-last", "off"]) == 0
    out = capsys.readouterr().out
    assert "Predictor.predict" not in out and "pretrained path" in out and "channels_last" not in out
    assert bench.main([str(photos), *TINY, "--workers", "0", "--no-predictor"]) == 0  # the default: on
    assert "channels_last" in capsys.readouterr().out


def test_empty_folder_is_a_clear_error(bench, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no photos here")
    assert bench.main([str(empty), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"no images found in {empty}" in err and "pass a folder" in err


def test_missing_folder_is_a_clear_error(bench, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert bench.main([str(missing), *TINY]) == 2
    err = capsys.readouterr().err
    assert f"{missing} does not exist" in err
