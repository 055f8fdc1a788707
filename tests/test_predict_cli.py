"""`effv2birds predict` at scale: files, folders and globs, batches, CSV/JSONL output, unreadable files, flips."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from effv2birds.cli import main
from effv2birds.data import expand_image_paths
from effv2birds.training import TTA_MODES, load_trained

pytestmark = [pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture()
def photos(colour_photos, tmp_path) -> Path:
    """``photos/`` with nested folders, a text file and an undecodable JPEG among the good photos."""
    root = tmp_path / "photos"
    shutil.copytree(colour_photos / "test", root / "birds")
    (root / "birds" / "notes.txt").write_text("not a photo")
    (root / "birds" / "Red-Bird" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def test_expand_files_folders_and_globs(photos):
    folder = expand_image_paths([photos])
    assert len(folder) == 13 and all(p.suffix == ".jpg" for p in folder) and folder == sorted(folder)
    red = expand_image_paths([str(photos / "birds" / "Red-*" / "*.jpg")])
    assert [p.parent.name for p in red] == ["Red-Bird"] * 4
    deep = expand_image_paths([str(photos / "**" / "0.jpg")])
    assert len(deep) == 4
    # given twice: kept once, in the given order
    both = expand_image_paths([red[1], photos / "birds" / "Red-Bird"])
    assert both[0] == red[1] and len(both) == 4
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_image_paths([photos / "nope.jpg"])
    with pytest.raises(FileNotFoundError, match="no image files match"):
        expand_image_paths([str(photos / "*.png")])
    (photos / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        expand_image_paths([photos / "empty"])


def test_csv_output_reports_the_bad_file_and_goes_on(tiny_run, photos, tmp_path, capsys):
    out = tmp_path / "out" / "preds.csv"
    code = main(["predict", str(tiny_run), str(photos), "--output", str(out), "--top-k", "3", "--batch-size", "5",
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 1  # some image could not be read
    assert "broken.jpg" in captured.err and "Traceback" not in captured.err
    assert "13 image(s), 1 unreadable" in captured.out
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label_1", "probability_1", "label_2", "probability_2", "label_3",
                             "probability_3", "error"]
    assert len(rows) == 13
    bad = [r for r in rows if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["broken.jpg"] and bad[0]["label_1"] == ""
    good = [r for r in rows if not r["error"]]
    expected = load_trained(tiny_run, device="cpu").predict([r["path"] for r in good], top_k=3)
    for row, pred in zip(good, expected):
        assert [row["label_1"], row["label_2"], row["label_3"]] == [label for label, _ in pred]
        assert float(row["probability_1"]) == pytest.approx(pred[0][1], rel=1e-4)
        assert float(row["probability_1"]) >= float(row["probability_2"]) >= float(row["probability_3"])


def test_jsonl_output_with_a_glob_and_flips(tiny_run, photos, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    pattern = str(photos / "birds" / "*-Bird" / "[0-9].jpg")
    assert main(["predict", str(tiny_run), pattern, "--output", str(out), "--tta", "flip", "--top-k", "9",
                 "--device", "cpu"]) == 0
    capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and all(r["error"] is None for r in rows)
    assert all(len(r["top_k"]) == 4 for r in rows)  # top-k is capped at the run's 4 classes
    flipped = load_trained(tiny_run, device="cpu").predict([r["path"] for r in rows], top_k=1, tta="flip")
    assert [r["top_k"][0]["label"] for r in rows] == [p[0][0] for p in flipped]
    assert [r["top_k"][0]["probability"] for r in rows] == pytest.approx([p[0][1] for p in flipped], rel=1e-5)


def test_table_and_json_keep_going_past_a_bad_file(tiny_run, photos, capsys):
    red = photos / "birds" / "Red-Bird"
    assert main(["predict", str(tiny_run), str(red / "broken.jpg"), str(red / "0.jpg"), "--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert [o["error"] is None for o in out] == [False, True] and "broken.jpg" in out[0]["error"]
    assert len(out[1]["top_k"]) == 4 and "broken.jpg" in captured.err
    assert main(["predict", str(tiny_run), str(red), "--top-k", "1"]) == 1
    table = capsys.readouterr().out
    assert str(red / "0.jpg") in table and "%" in table and "broken" not in table


def test_bad_arguments_are_clear_errors(tiny_run, photos, tmp_path, capsys):
    img = str(photos / "birds" / "Red-Bird" / "0.jpg")
    for args, text in ((["--top-k", "0"], "--top-k: '0' is not a positive integer"),
                       (["--batch-size", "-1"], "--batch-size: '-1' is not a positive integer"),
                       (["--output", str(tmp_path / "preds.txt")], ".csv or .jsonl"),
                       (["--tta", "mirror"], "invalid choice")):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(tiny_run), img, *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err, args
    assert main(["predict", str(tiny_run), str(photos / "missing.jpg")]) == 2
    assert "missing.jpg does not exist" in capsys.readouterr().err
    assert TTA_MODES == ("none", "flip")  # the CLI's --tta choices are these


def test_predict_iter_reports_and_predict_raises(tiny_run, photos):
    from effv2birds.training import UnreadableImageError

    predictor = load_trained(tiny_run, device="cpu")
    red = sorted((photos / "birds" / "Red-Bird").glob("*.jpg"))
    results = list(predictor.predict_iter(red, top_k=2, batch_size=2))
    assert [r.image for r in results] == red
    assert [r.error is not None for r in results] == [p.name == "broken.jpg" for p in red]
    good = [p for p in red if p.name != "broken.jpg"]
    alone = predictor.predict(good, top_k=2, batch_size=3)
    kept = [r.top_k for r in results if r.error is None]
    # other batch sizes run other CPU kernels: the same classes, probabilities equal to rounding (seen: 3e-8 apart)
    assert [[name for name, _ in row] for row in kept] == [[name for name, _ in row] for row in alone]
    assert [p for row in kept for _, p in row] == pytest.approx([p for row in alone for _, p in row], abs=1e-5)
    with pytest.raises(UnreadableImageError, match="broken.jpg"):
        predictor.predict(red)
    with pytest.raises(ValueError, match="top_k=0"):
        predictor.predict(good, top_k=0)


def test_every_saved_metadata_form_predicts_identically(tiny_run, photos, tmp_path):
    import dataclasses

    from effv2birds import TrainConfig
    from effv2birds.preprocessing import Preprocessing
    from effv2birds.training.records import read_weights, save_weights

    state, meta = read_weights(tiny_run / "model" / "best.safetensors")
    assert meta["preprocessing"].get("resize", "resize") == "resize" and meta["preprocessing"].get("normalize", True)
    kept = {k: v for k, v in meta.items() if k not in ("transforms", "preprocessing")}
    saved = {k: meta["preprocessing"][k] for k in ("image_size", "resize", "mean", "std", "normalize")}
    new = Preprocessing.from_config(TrainConfig.from_file(tiny_run / "config.json"))
    old_transforms = dict(mean=saved["mean"], std=saved["std"], eval_size=saved["image_size"],
                          crop_size=saved["image_size"], interpolation="bilinear", min_size=33,
                          train_scale=[0.08, 1.0], hflip=True, source=new.mean_std_source)
    forms = {
        "new": {**kept, "preprocessing": new.to_dict()},  # what train() records from now on
        "both-keys": {**kept, "preprocessing": saved, "transforms": old_transforms},  # train() until now
        "oldest": {**kept, "preprocessing": {k: saved[k] for k in ("image_size", "mean", "std")}},
    }
    paths = sorted(p for p in (photos / "birds").rglob("*.jpg") if p.name != "broken.jpg")
    reference = load_trained(tiny_run, device="cpu")
    want = reference.predict(paths, top_k=4)
    want_flip = reference.predict(paths[:3], top_k=4, tta="flip")
    for name, form in forms.items():
        save_weights(state, tmp_path / name / "model" / "best.safetensors", form)
        predictor = load_trained(tmp_path / name, device="cpu")
        assert isinstance(predictor.preprocessing, Preprocessing), name
        assert predictor.predict(paths, top_k=4) == want, name
        assert predictor.predict(paths[:3], top_k=4, tta="flip") == want_flip, name
        expected = new if name != "oldest" else dataclasses.replace(new, mean_std_source="")
        assert predictor.preprocessing == expected, name
    assert "transforms" not in read_weights(tmp_path / "new" / "model" / "best.safetensors")[1]
