"""benchmarks/train_throughput.py: a tiny CPU run prints both paths, the ratio and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_throughput.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def test_tiny_run_prints_both_paths_and_the_ratio(tmp_path):
    out = tmp_path / "rows.json"
    proc = run("--data", "synthetic", "--sizes", "32", "--batch-size", "4", "--steps", "1", "--windows", "2",
               "--warmup", "1", "--max-samples", "16", "--threads", "1", "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache"), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("device: ") and "torch " in line for line in lines)
    header = next(i for i, line in enumerate(lines) if "reference img/s" in line)
    assert "trainer img/s" in lines[header] and "ratio b/a" in lines[header] and "peak MiB" in lines[header]
    size, batch, ref, trainer, ratio, ref_mib, trainer_mib = lines[header + 1].split()
    assert (size, batch) == ("32", "4")
    assert float(ref) > 0 and float(trainer) > 0
    assert float(ref_mib) > 100 and float(trainer_mib) > 100  # peak RSS of a process that imported torch
    rows = json.loads(out.read_text())["rows"]
    assert [r["path"] for r in rows] == ["reference", "trainer"]
    assert all(len(r["windows"]) == 2 and r["images_per_s"] > 0 for r in rows)
    # the printed ratio is the unrounded rates' ratio, to the 2 decimals printed (the printed rates are
    # rounded too, so on a slow machine their quotient can be off by more than that)
    assert abs(float(ratio) - rows[1]["images_per_s"] / rows[0]["images_per_s"]) <= 0.005 + 1e-9


def test_missing_data_folder_is_a_clear_error(tmp_path):
    proc = run("--data", str(tmp_path / "nowhere"), "--device", "cpu")
    assert proc.returncode == 2
    assert "nowhere" in proc.stderr and "--data" in proc.stderr
