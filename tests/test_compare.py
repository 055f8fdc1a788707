"""`effv2birds compare`: runs side by side, as the lever table of docs/results.md is read."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from effv2birds import TrainConfig
from effv2birds.cli import main
from effv2birds.errors import ConfigError
from effv2birds.study import compare_runs, format_comparison, plot_curves, read_curves, read_runs, write_curves
from effv2birds.study.compare import CURVE_COLUMNS
from effv2birds.training import train

pytestmark = [pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
              pytest.mark.usefixtures("one_thread")]

TINY = dict(data="synthetic", synthetic_size=40, max_samples=40, image_size=32, batch_size=8, epochs=2,
            width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True,
            warmup_epochs=0.5)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    common = {**TINY, "cache_dir": str(root / "cache")}
    first = train(TrainConfig(**common, output_dir=str(root / "reference"))).run_dir
    second = train(TrainConfig(**common, output_dir=str(root / "wd05"), weight_decay=0.5, seed=1)).run_dir
    return Path(first), Path(second)


def test_rows_name_the_changes_and_the_best_validation_epoch(two_runs, tmp_path):
    rows = compare_runs(two_runs)
    assert [r["changes"] for r in rows] == ["(reference)", "weight_decay=0.5"]  # the seed has its own column
    assert [r["seed"] for r in rows] == [0, 1]
    for row, run in zip(rows, two_runs):
        summary = json.loads((run / "metrics.json").read_text())
        assert (row["best_val_top1"], row["best_epoch"]) == (summary["best_val_top1"], summary["best_epoch"])
        low, high = row["val_interval"]
        assert low <= row["best_val_top1"] <= high and (row["epochs_done"], row["epochs"]) == (2, 2)
    table = format_comparison(rows)
    assert "| wd05 | 1 | weight_decay=0.5 | 2 of 2 |" in table
    # a run still training (no metrics.json yet): its epochs so far, no interval
    running = tmp_path / "running"
    shutil.copytree(two_runs[0], running)
    (running / "metrics.json").unlink()
    row = compare_runs([two_runs[0], running])[1]
    assert row["val_interval"] is None and row["best_val_top1"] == rows[0]["best_val_top1"]


def test_curves_csv_has_every_epoch_of_every_run(two_runs, tmp_path):
    assert write_curves(tmp_path / "curves.csv", two_runs) == 4
    with open(tmp_path / "curves.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["run"], r["seed"], r["epoch"]) for r in table] == [
        ("reference", "0", "1"), ("reference", "0", "2"), ("wd05", "1", "1"), ("wd05", "1", "2")]
    epochs = [json.loads(x) for x in (two_runs[1] / "metrics.jsonl").read_text().splitlines()]
    last = [e for e in epochs if e["kind"] == "epoch"][-1]
    assert float(table[-1]["val_top1"]) == pytest.approx(last["val_top1"], rel=1e-5)


def test_plot_draws_every_run_as_a_png_and_keeps_an_old_plot_when_a_run_is_missing(two_runs, tmp_path):
    from PIL import Image

    png = tmp_path / "plots" / "levers.png"
    assert plot_curves(png, two_runs, title="weight decay") == 2
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (700, 400)
    before = png.read_bytes()
    with pytest.raises(FileNotFoundError, match="is not a training run"):
        plot_curves(png, [two_runs[0], tmp_path / "nowhere"])
    assert png.read_bytes() == before and sorted(p.name for p in png.parent.iterdir()) == ["levers.png"]
    # the title is drawn: the same runs give the same bytes under the same title, other bytes under another
    plot_curves(tmp_path / "same.png", two_runs, title="weight decay")
    plot_curves(tmp_path / "other.png", two_runs, title="batch size")
    assert (tmp_path / "same.png").read_bytes() == before != (tmp_path / "other.png").read_bytes()
    plot_curves(tmp_path / "default.png", two_runs)  # no title: "runs"
    plot_curves(tmp_path / "runs.png", two_runs, title="runs")
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "runs.png").read_bytes()


def test_cli_prints_the_table_and_refuses_a_folder_that_is_not_a_run(two_runs, tmp_path, capsys):
    assert main(["compare", *map(str, two_runs), "--curves", str(tmp_path / "c.csv"),
                 "--plot", str(tmp_path / "c.png"), "--title", "weight decay"]) == 0
    out = capsys.readouterr()
    assert "| reference | 0 | (reference) |" in out.out and "4 epoch row(s)" in out.err
    assert "2 run(s) drawn in" in out.err and (tmp_path / "c.png").stat().st_size > 1000
    assert main(["compare", str(two_runs[0]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["run"] == "reference"
    assert main(["compare", str(two_runs[0]), str(tmp_path)]) == 2
    assert "is not a training run" in capsys.readouterr().err


def test_a_curves_csv_stands_in_for_run_folders_that_are_gone(two_runs, tmp_path):
    saved = tmp_path / "saved-curves.csv"
    write_curves(saved, two_runs)
    assert list(read_curves(saved)) == ["reference", "wd05"]
    rows = compare_runs([saved, two_runs[0]])  # the first run *folder* is the reference for the changes
    assert [r["run"] for r in rows] == ["reference", "wd05", "reference"]
    assert rows[0]["changes"] == "(saved curves in saved-curves.csv: config not recorded)"
    assert rows[2]["changes"] == "(reference)" and [r["seed"] for r in rows] == [0, 1, 0]
    from_folders = compare_runs(two_runs)
    for row, folder_row in zip(rows, from_folders):
        assert (row["best_val_top1"], row["best_epoch"]) == pytest.approx(
            (folder_row["best_val_top1"], folder_row["best_epoch"]), rel=1e-5)
        assert row["val_interval"] is None and row["epochs"] is None  # the CSV holds neither
    table = format_comparison(rows)
    assert "| wd05 | 1 | (saved curves in saved-curves.csv: config not recorded) | 2 of — |" in table
    copy = tmp_path / "copy.csv"
    assert write_curves(copy, [saved]) == 4 and copy.read_text() == saved.read_text()
    assert plot_curves(tmp_path / "both.png", [two_runs[1], saved]) == 3


def test_the_published_curves_read_back_as_docs_use_them(tmp_path):
    """The README's `compare runs/birds128 docs/recipes/birds128-mix80-curves.csv`: our seed 0 of the 128 px recipe."""
    published = Path(__file__).resolve().parents[1] / "docs" / "recipes" / "birds128-mix80-curves.csv"
    row, = compare_runs([published])
    assert (row["run"], row["seed"], row["epochs_done"], row["best_epoch"]) == ("mix80-s0", 0, 80, 80)
    assert row["best_val_top1"] == pytest.approx(0.74)  # docs/results.md: 74.0 % at epoch 80
    assert write_curves(tmp_path / "copy.csv", [published]) == 80
    assert (tmp_path / "copy.csv").read_text() == published.read_text()


def test_a_csv_that_is_not_a_curves_csv_is_refused_by_name(two_runs, tmp_path, capsys):
    other = tmp_path / "results.csv"
    other.write_text("run,seed,test_top1\nx,0,0.5\n")
    with pytest.raises(ConfigError, match=r"results.csv is not a curves CSV: it lacks the column\(s\) epoch, "):
        compare_runs([two_runs[0], other])
    assert main(["compare", str(two_runs[0]), str(other)]) == 2
    assert "is not a curves CSV" in capsys.readouterr().err
    broken = tmp_path / "broken.csv"
    broken.write_text(",".join(CURVE_COLUMNS) + "\nx,0,1,2.5,0.1,n/a,2.9,0.001\n")
    with pytest.raises(ConfigError, match="broken.csv, line 2: expected numbers"):
        read_curves(broken)
    with pytest.raises(FileNotFoundError, match="no curves CSV at .*gone.csv"):
        compare_runs([two_runs[0], tmp_path / "gone.csv"])


def test_cli_passes_the_plot_title_on_and_refuses_it_without_a_plot(two_runs, tmp_path, monkeypatch, capsys):
    import effv2birds.study.compare as compare_module

    titles = []
    monkeypatch.setattr(compare_module, "plot_curves", lambda path, runs, title: titles.append(title) or len(runs))
    assert main(["compare", *map(str, two_runs), "--plot", str(tmp_path / "a.png"), "--title", "weight decay"]) == 0
    assert main(["compare", *map(str, two_runs), "--plot", str(tmp_path / "b.png")]) == 0
    assert titles == ["weight decay", None]  # None: plot_curves' own default
    assert main(["compare", *map(str, two_runs), "--title", "weight decay"]) == 2
    assert "no --plot FILE.png was given" in capsys.readouterr().err


def test_cli_reads_each_run_once_for_the_table_the_csv_and_the_figure(two_runs, tmp_path, monkeypatch):
    import effv2birds.study.compare as compare_module

    saved = tmp_path / "saved.csv"
    write_curves(saved, two_runs)
    reads = []
    for name in ("_read_run", "read_curves"):
        real = getattr(compare_module, name)
        monkeypatch.setattr(compare_module, name, lambda path, real=real: reads.append(Path(path).name) or real(path))
    assert main(["compare", str(two_runs[0]), str(saved), "--curves", str(tmp_path / "all.csv"),
                 "--plot", str(tmp_path / "all.png")]) == 0
    assert sorted(reads) == sorted([two_runs[0].name, saved.name])
    # runs read once give what their paths give
    assert compare_runs(read_runs([two_runs[0], saved])) == compare_runs([two_runs[0], saved])
