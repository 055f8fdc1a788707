"""benchmarks/data_throughput.py: a tiny run prints the usual and the cached rate and the speed-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "data_throughput.py"


def test_tiny_run_prints_both_paths_and_the_speed_up(tmp_path):
    import PIL.Image

    for cls, colour in (("Hoopoe", (200, 80, 40)), ("Indian-Roller", (40, 90, 210))):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(6):
            PIL.Image.new("RGB", (40 + i, 30), colour).save(tmp_path / "photos" / cls / f"{i}.jpg")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "photos"), "--sizes", "16",
                           "--batch-size", "4", "--workers", "0", "--crop", "pad"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "torch " in lines[0]
    header = next(i for i, line in enumerate(lines) if "cached" in line and "speed-up" in line)
    size, usual, cached, speed_up, build = lines[header + 1].split()
    assert size == "16" and float(usual) > 0 and float(cached) > 0 and float(build) > 0
    assert abs(float(speed_up.rstrip("x")) - float(cached) / float(usual)) < 0.06 * float(speed_up.rstrip("x")) + 0.1


def test_missing_folder_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nowhere")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "nowhere" in proc.stderr
