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
    assert all(r["photo_size"] == r["image_size"] for r in rows)  # the quick preset feeds photos at their size
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


def test_new_data_trains_the_study_recipe_beside_ours_at_the_same_budget():
    runs = plan_runs("new-data", preset="ours", image_sizes=(32,), seeds=(0, 1), output_dir="o",
                     overrides={"epochs": 7})
    assert [r.run for r in runs] == ["32px", "32px-study-recipe", "32px-seed1", "32px-study-recipe-seed1"]
    ours, study = runs[0].config, runs[1].config
    assert (ours.optimizer, ours.normalize, ours.zero_init_residual, runs[0].recipe) == ("adamw", True, True, "ours")
    assert (study.optimizer, study.lr, study.batch_size, study.schedule, study.normalize, study.random_crop,
            study.hflip, study.zero_init_residual, study.stochastic_depth, runs[1].recipe) == (
        "adam", 1e-4, 128, "plateau", False, "none", False, False, None, "study")
    assert ours.epochs == study.epochs == 7 and ours.per_class == study.per_class == 100  # same budget
    assert [r.config.seed for r in runs] == [0, 0, 1, 1]
    # the same 32 px photos: our recipe feeds them at a 64 px input (presets.PHOTO_SIZE_RECIPES), the study's at 32 px
    assert (ours.photo_size, ours.image_size, study.photo_size, study.image_size) == (32, 64, None, 32)
    big = plan_runs("new-data", preset="ours", image_sizes=(128,), output_dir="o")[0].config
    assert (big.photo_size, big.image_size) == (None, 128)
    assert len(plan_runs("new-data", preset="blog", image_sizes=(32,), output_dir="o")) == 1  # no twin of itself


def test_the_32px_recipe_file_and_the_preset_plan_the_same_study_runs_at_a_set_budget():
    """docs/study trains ``--preset ours`` at its own budget; examples/configs/birds32.toml differs from the preset
    only in its schedule length (and where its photos are), so at the study's budget both plan the same runs
    and the report's new-data runs are those of the 32 px recipe."""
    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "birds32.toml"
    budget = {"epochs": 5, "warmup_epochs": 1, "data": "synthetic"}
    from_file = plan_runs("new-data", preset="ours", config_file=str(config), image_sizes=(32,), output_dir="o",
                          overrides=budget)
    from_preset = plan_runs("new-data", preset="ours", image_sizes=(32,), output_dir="o", overrides=budget)
    assert [r.config for r in from_file] == [r.config for r in from_preset]
    assert (from_file[0].config.photo_size, from_file[0].config.image_size, from_file[0].config.epochs) == (32, 64, 5)


def test_new_data_runs_take_the_recipe_for_their_photo_size_below_the_users_values(monkeypatch, tmp_path):
    """A per-size recipe value other than the input (here a crop) reaches the study's run of that size,
    its epochs give way to the study's budget, and a value the user sets in a file or a flag still wins."""
    from effv2birds import presets

    monkeypatch.setitem(presets.PHOTO_SIZE_RECIPES, "ours",
                        {128: dict(image_size=128, random_crop="resized", epochs=99)})
    budget = {"epochs": 3, "data": "synthetic"}

    def planned(**kw):
        ours, study = plan_runs("new-data", preset="ours", image_sizes=(128,), output_dir="o", **kw)
        return ours.config, study.config

    ours, study = planned(overrides=budget)
    assert (ours.random_crop, ours.epochs, ours.image_size, ours.photo_size) == ("resized", 3, 128, None)
    assert study.random_crop == "none"  # the study's recipe has no per-size values
    assert planned(overrides={**budget, "random_crop": "pad"})[0].random_crop == "pad"
    (tmp_path / "c.toml").write_text('random_crop = "none"\n')
    assert planned(config_file=str(tmp_path / "c.toml"), overrides=budget)[0].random_crop == "none"


def _write_finished_run(run, test_top1: float) -> None:
    """What a finished run leaves behind (config, one epoch, the summary), written by hand."""
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.json").write_text(json.dumps(run.config.to_dict()))
    (run.run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, "val_top1": 0.5}) + "\n")
    (run.run_dir / "metrics.json").write_text(json.dumps(
        {"status": "finished", "best_epoch": 1, "best_val_top1": 0.5, "epochs_run": 1,
         "test": {"top1": test_top1, "num_samples": 500}}))


def test_report_covers_every_run_in_the_folder_with_intervals_and_seed_summary(tmp_path):
    from effv2birds.study import write_report
    from effv2birds.study.report import wilson_interval

    runs = plan_runs("new-data", preset="quick", image_sizes=(32,), seeds=(0, 1), output_dir=tmp_path)
    for i, run in enumerate(runs):
        _write_finished_run(run, test_top1=0.2 + 0.1 * i)
        (run.run_dir / "study_run.json").write_text(json.dumps({"recipe": run.recipe}))  # no config: config.json
    rows = write_report(tmp_path, runs[:1])  # planned: one run; the other three are found in the folder
    assert rows[0]["run"] == "32px" and sorted(r["run"] for r in rows) == sorted(r.run for r in runs)
    low, high = wilson_interval(0.2, 500)
    assert rows[0]["test_top1_ci95"] == f"{100 * low:.1f}-{100 * high:.1f}" and rows[0]["test_samples"] == 500
    by_run = {r["run"]: r for r in rows}
    text = (tmp_path / "report.md").read_text()
    epochs = runs[0].config.epochs
    assert f"| 32 | quick | {epochs} | 2 | 30.00 ± 14.14 | 20.00–40.00 |" in text  # seeds 0 and 1: 20 % and 40 %
    assert f"| 32 | study | {epochs} | 2 | 40.00 ± 14.14 |" in text
    assert by_run["32px-study-recipe"]["study_top1"] == 6.0  # the study's own 32 px figure beside its recipe's run


def test_report_only_puts_the_note_under_the_title(tmp_path):
    _write_finished_run(plan_runs("new-data", preset="quick", image_sizes=(32,), output_dir=tmp_path)[0], test_top1=0.3)
    cmd = [sys.executable, str(ROOT / "examples" / "reproduce.py"), "--report-only", "--output", str(tmp_path),
           "--title", "Birds", "--note", "Regenerate: `bash docs/study/reproduce.sh`."]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "EFFV2BIRDS_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# Birds\n\nRegenerate: `bash docs/study/reproduce.sh`.\n\n**Data")
    assert "| 32px |" in text and "| 30.00 |" in text  # the run's row: its test top-1 in %


@pytest.mark.slow
def test_main_job_learns_and_shows_the_recipe_contrast(tmp_path, one_thread):
    """The no-argument main job cut down to its new-data pair at 32 px, with the quick preset's own
    data, steps and recipe: our recipe learns well above chance, the study's recipe learns less."""
    from effv2birds.study import run_planned

    runs = plan_runs("new-data", preset="quick", image_sizes=(32,), output_dir=tmp_path)
    assert [r.run for r in runs] == ["32px", "32px-study-recipe"]
    assert run_planned(runs, log=lambda _: None) == {}
    best = {r.run: json.loads((r.run_dir / "metrics.json").read_text())["best_val_top1"] for r in runs}
    curve = [e["val_top1"] for e in read_epochs(runs[0].run_dir)]
    assert best["32px"] >= 3 * (1 / 25), best  # chance is 4 %
    assert curve[-1] > curve[0], curve  # the learning curve rises
    assert best["32px-study-recipe"] < best["32px"], best


def test_quick_preset_defaults_and_pretrained_baseline_skipped_offline(tmp_path, monkeypatch):
    """Offline without weights, the pretrained experiment's scratch baseline is skipped with its twins."""
    from effv2birds.study import run_planned

    monkeypatch.setenv("EFFV2BIRDS_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # no cached weights either

    runs = plan_runs("pretrained", preset="quick", output_dir=tmp_path)
    assert {r.config.image_size for r in runs} == {48}  # quick: 32 and 48 px (the synthetic birds are drawn at 64)
    trained = []
    skipped = run_planned(runs, log=trained.append)
    assert set(skipped) == {"pretrained/linear-probe", "pretrained/fine-tune", "pretrained/scratch"}
    assert "weights=" in skipped["pretrained/scratch"] and not (runs[2].run_dir / "metrics.json").exists()
    from effv2birds.study.report import discover_runs  # a later report of the folder still lists all three

    assert sorted(r.name for r in discover_runs(tmp_path)) == sorted(skipped)


def test_a_run_with_the_config_of_a_finished_one_reuses_its_results(tmp_path):
    from effv2birds.study import run_planned

    base = plan_runs("hparams", preset="quick", output_dir=tmp_path)[0]
    twin = plan_runs("ablation", preset="quick", output_dir=tmp_path)[0]
    assert (base.name, twin.name) == ("hparams/baseline", "ablation/default")
    base.run_dir.mkdir(parents=True)  # what a finished run leaves behind, written by hand
    (base.run_dir / "config.json").write_text(json.dumps(base.config.to_dict()))
    (base.run_dir / "metrics.json").write_text(json.dumps({"status": "finished", "best_val_top1": 0.3}))
    logs = []
    assert run_planned([twin], log=logs.append) == {}
    assert "same config as hparams/baseline" in logs[0]
    assert json.loads((twin.run_dir / "metrics.json").read_text())["best_val_top1"] == 0.3
    assert "hparams/baseline" in json.loads((twin.run_dir / "study_run.json").read_text())["note"]
    assert run_status(twin.run_dir) == "finished"


def test_a_finished_run_with_another_config_is_refused_not_reused(tmp_path, monkeypatch):
    import effv2birds.training
    from effv2birds.study import run_planned

    monkeypatch.setattr(effv2birds.training, "train", lambda config: pytest.fail(f"trained {config.output_dir}"))
    runs = plan_runs("hparams", preset="quick", output_dir=tmp_path)
    old = runs[0]
    old.run_dir.mkdir(parents=True)  # a finished run of an earlier recipe: 2 more epochs than the plan's
    (old.run_dir / "config.json").write_text(json.dumps(old.config.replace(epochs=old.config.epochs + 2).to_dict()))
    (old.run_dir / "metrics.json").write_text(json.dumps({"status": "finished", "best_val_top1": 0.3}))
    before = {p: p.read_bytes() for p in old.run_dir.iterdir()}
    logs = []
    with pytest.raises(ConfigError, match=r"1 finished run.*hparams/baseline \(epochs: 5 there, 3 now\).*Move"):
        run_planned(runs, log=logs.append)
    assert logs == [] and {p: p.read_bytes() for p in old.run_dir.iterdir()} == before  # nothing trained or lost
    assert not any(r.run_dir.exists() for r in runs[1:])


def test_runs_train_two_at_a_time_with_the_same_results(report, tmp_path):
    """--jobs 2 (the default on a 2-core CPU) trains each distinct config once, in worker processes,
    and gives the numbers of --jobs 1 (both one thread per run here)."""
    output, proc = report
    assert "runs, 2 at a time" in proc.stdout and "same config as" in proc.stdout, proc.stdout[-2000:]
    serial = tmp_path / "serial"
    done = _launch(serial, "--experiment", "hparams", "--jobs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "at a time" not in done.stdout
    for metrics in serial.glob("hparams/*/metrics.json"):
        parallel = json.loads((output / "hparams" / metrics.parent.name / "metrics.json").read_text())
        mine = json.loads(metrics.read_text())
        assert (mine["best_val_top1"], mine["test"]["top1"], mine["global_steps"]) == (
            parallel["best_val_top1"], parallel["test"]["top1"], parallel["global_steps"]), metrics.parent.name
    bad = subprocess.run([sys.executable, str(ROOT / "examples" / "reproduce.py"), "--jobs", "0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--jobs '0' is not valid" in bad.stderr, bad.stderr[-2000:]


def test_a_photo_size_in_the_users_layers_does_not_bring_its_recipe_into_runs_of_other_sizes(monkeypatch):
    """The study sets each run's photo size itself, so the values for the size a config file names (say
    birds32's 32) must not reach its 128 px runs or its fixed-size experiments."""
    from effv2birds import presets

    monkeypatch.setitem(presets.PHOTO_SIZE_RECIPES, "ours", {32: dict(image_size=64, random_crop="resized")})
    user = {"photo_size": 32, "epochs": 3, "data": "synthetic"}
    runs = plan_runs("all", preset="ours", image_sizes=(32, 128), output_dir="o", overrides=user)
    by_name = {r.name: r.config for r in runs}
    assert (by_name["new-data/32px"].random_crop, by_name["new-data/32px"].image_size) == ("resized", 64)
    assert by_name["new-data/128px"].random_crop == "pad" and by_name["new-data/128px"].image_size == 128
    assert by_name["hparams/baseline"].random_crop == "pad" and by_name["hparams/baseline"].photo_size is None
