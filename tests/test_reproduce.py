"""examples/reproduce.py end to end (every experiment, a couple of steps) and the report it writes."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from effv2birds.config import ConfigError
from effv2birds.study import COLUMNS, EXPERIMENTS, plan_runs, read_epochs, run_status

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "synthetic_size=60", "--set", "max_samples=25", "--set", "max_steps=2", "--set", "batch_size=8",
        "--set", "width_multiplier=0.25", "--set", "depth_multiplier=0.1", "--set", "epochs=2"]


def _launch(output: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EFFV2BIRDS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "examples" / "reproduce.py"),
           "--output", str(output), "--image-sizes", "32", "48", *TINY, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("reproduce")
    proc = _launch(output)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return output, proc


def test_every_experiment_has_rows_and_agrees_with_run_records(report):
    output, _ = report
    rows = list(csv.DictReader(open(output / "results.csv")))
    assert list(rows[0]) == COLUMNS
    assert {r["experiment"] for r in rows} == set(EXPERIMENTS)
    as_json = json.loads((output / "results.json").read_text())
    assert len(as_json) == len(rows)
    for row in as_json:
        run_dir = output / row["experiment"] / row["run"]
        if row["status"] == "skipped":  # pretrained runs offline, with the loader's message
            assert row["experiment"] == "pretrained" and "weights=" in row["note"]
            continue
        assert row["status"] == "finished", row
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert row["test_top1"] == round(100 * metrics["test"]["top1"], 2)
        assert row["params"] == metrics["params"] and row["epochs_run"] == metrics["epochs_run"]
        assert row["final_val_top1"] == round(100 * read_epochs(run_dir)[-1]["val_top1"], 2)
        assert row["image_size"] == json.loads((run_dir / "config.json").read_text())["image_size"]


def test_report_markdown_and_plots(report):
    output, _ = report
    text = (output / "report.md").read_text()
    for exp in EXPERIMENTS:
        assert f"## {exp}" in text
    for plot in ["curves_new-data.png", "curves_ablation.png", "accuracy_by_resolution.png",
                 "ablation_accuracy_vs_size.png", "confusion_matrix_best.png"]:
        assert (output / plot).stat().st_size > 1000, plot
        assert f"]({plot})" in text
    assert "| 6.00 |" in text  # the study's 32 px figure beside ours (it has none at 48 px)


def test_rerun_reuses_finished_runs(report):
    output, _ = report
    before = {p: p.stat().st_mtime_ns for p in output.glob("*/*/metrics.json")}
    proc = _launch(output, "--experiment", "ablation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished earlier") == 5
    after = {p: p.stat().st_mtime_ns for p in output.glob("*/*/metrics.json")}
    assert before == after


def test_plan_names_variants_and_validates():
    runs = plan_runs("ablation", preset="blog", output_dir="o")
    assert [r.config.variant for r in runs] == ["default", "all_mbconv", "all_fused", "half_layers", "four_stage"]
    assert all(r.config.epochs == 50 and r.config.optimizer == "adam" and r.config.lr == 1e-4 for r in runs)
    blog = plan_runs("new-data", preset="blog", output_dir="o")[0].config
    assert (blog.epochs, blog.min_epochs, blog.early_stop_patience, blog.schedule, blog.normalize) == (
        350, 150, 50, "plateau", False)
    with pytest.raises(ConfigError, match="experiment"):
        plan_runs("nope")
    with pytest.raises(ConfigError, match="preset"):
        plan_runs("all", preset="nope")


def test_precedence_preset_file_overrides(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("epochs = 9\nmin_epochs = 0\nlr = 0.5\n")
    run = plan_runs("new-data", preset="blog", image_sizes=(32,), config_file=str(cfg_file),
                    overrides={"lr": 0.25}, output_dir=tmp_path)[0]
    assert (run.config.epochs, run.config.lr, run.config.optimizer) == (9, 0.25, "adam")


def test_run_status(tmp_path):
    assert run_status(tmp_path / "x") == "new"
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.jsonl").write_text("{}\n")
    assert run_status(tmp_path / "x") == "interrupted"
    (tmp_path / "x" / "metrics.json").write_text('{"status": "finished"}')
    assert run_status(tmp_path / "x") == "finished"


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    script = str(ROOT / "examples" / "reproduce.py")
    proc = subprocess.run([sys.executable, script, "--experiment", "new-data", "--data", str(tmp_path / "nope"),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nope" in proc.stderr
    proc = subprocess.run([sys.executable, script, "--set", "epochs=0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "epochs=0" in proc.stderr and "Traceback" not in proc.stderr
