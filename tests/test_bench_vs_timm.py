"""benchmarks/vs_timm.py: log parsing, clear errors, and a tiny end-to-end run against timm's train.py.

The end-to-end test never downloads: it uses ``$EFFV2BIRDS_TIMM_TRAIN`` if set, else the cached copy
that ``python benchmarks/vs_timm.py --fetch-timm-train`` writes, and else the committed stand-in
``benchmarks/timm_train_loop.py``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_timm.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("vs_timm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_timm"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("vs_timm", None)


def test_timm_log_lines_parse(bench):
    log = (
        "Model efficientnetv2_s created, param count:20209192\n"
        "Train: 0 [   0/39 (  0%)]  Loss: 3.29 (3.29)  Time: 3.912s,   16.36/s  (3.912s,   16.36/s)  "
        "LR: 1.000e-05  Data: 2.101 (2.101)\n"
        "Train: 0 [   1/39 (  3%)]  Loss: 3.27 (3.28)  Time: 0.876s,   73.06/s  (2.394s,   26.73/s)  "
        "LR: 1.000e-05  Data: 0.001 (1.051)\n"
        "Test: [   0/7]  Time: 0.500 (0.500)  Loss:  3.2 (3.2)  Acc@1:  4.0 ( 4.0)\n"
        "Train: 1 [   0/39 (  0%)]  Loss: 3.20 (3.20)  Time: 2.000s,   32.00/s  (2.000s,   32.00/s)\n"
    )
    assert bench.timm_step_rates(log) == [(0, 16.36), (0, 73.06), (1, 32.0)]


def test_effv2birds_metrics_parse(bench, tmp_path):
    rows = [{"kind": "step", "step": 1, "epoch": 0, "images_per_s": 10.0},
            {"kind": "step", "step": 2, "epoch": 0, "images_per_s": 20.0},
            {"kind": "epoch", "epoch": 1, "images_per_s": 15.0}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.effv2birds_step_rates(path) == [(0, 10.0), (0, 20.0)]


def test_warmup_is_left_out_of_every_epoch(bench):
    rates = [(0, 1.0), (0, 10.0), (0, 12.0), (0, 11.0), (1, 2.0), (1, 30.0)]
    rate = bench.steady_rate(rates, warmup=1, wall_s=3.0)
    assert (rate.images_per_s, rate.steps) == (11.5, 4)
    assert bench.steady_rate(rates[:1], warmup=1, wall_s=1.0).images_per_s is None


def test_cache_path_follows_xdg(bench, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bench.default_timm_train("1.2.3") == tmp_path / "effv2birds" / "timm-1.2.3" / "train.py"


def test_clear_errors_without_traceback(bench, tmp_path, capsys):
    assert bench.main([str(tmp_path / "nowhere"), "--timm-train", str(tmp_path / "train.py")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data folder") and "Traceback" not in err
    _tiny_folder(tmp_path / "data")
    assert bench.main([str(tmp_path / "data"), "--timm-train", str(tmp_path / "missing.py")]) == 2
    assert "--timm-train" in capsys.readouterr().err


def _tiny_folder(root: Path, train_per_class: int = 8, test_per_class: int = 2) -> Path:
    """Two classes of small random-noise PNGs (different mean colours) in train/ and test/."""
    import PIL.Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for name, colour in (("Hoopoe", (200, 80, 40)), ("Indian-Roller", (40, 90, 210))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.integers(-40, 40, (48, 48, 3)), 0, 255).astype(np.uint8)
                PIL.Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _timm_train_py(bench) -> Path:
    """timm's train.py when the machine has it (EFFV2BIRDS_TIMM_TRAIN or the cache), else the stand-in."""
    given = os.environ.get("EFFV2BIRDS_TIMM_TRAIN")
    if given:
        return Path(given)
    import timm

    cached = bench.default_timm_train(timm.__version__)
    return cached if cached.is_file() else bench.STAND_IN  # the test never downloads


def test_tiny_run_prints_and_writes_both_rates(bench, tmp_path):
    train_py = _timm_train_py(bench)
    data = _tiny_folder(tmp_path / "data")
    out = tmp_path / "vs_timm.json"
    cmd = [sys.executable, str(SCRIPT), str(data), "--sizes", "32", "--batch-size", "4", "--workers", "1",
           "--threads", "1", "--warmup-steps", "1", "--timm-train", str(train_py), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "timm img/s" in proc.stdout and "effv2birds/timm img/s" in proc.stdout and "ratio" in proc.stdout
    result = json.loads(out.read_text())
    assert result["meta"]["timm_train"] == str(train_py.resolve())
    (row,) = result["rows"]
    assert row["size"] == 32
    assert row["timm_images_per_s"] > 0 and row["effv2birds_timm_images_per_s"] > 0
    assert row["ratio_timm"] == pytest.approx(row["effv2birds_timm_images_per_s"] / row["timm_images_per_s"], rel=1e-2)
    table = proc.stdout.splitlines()[-2].split()  # "32  <timm>  <effv2birds>  <ratio>", then "wrote FILE"
    assert table[0] == "32" and len(table) == 4
