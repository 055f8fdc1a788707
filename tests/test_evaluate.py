"""evaluate_run / `effv2birds evaluate`: class mapping by name, files, agreement with predict, leak check,
test-time flips, several processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import PIL.Image
import pytest

from effv2birds.cli import main
from effv2birds.data import DataError, cache_split, load_image_dataset, write_train_hashes
from effv2birds.training import evaluate_run, load_trained

pytestmark = [pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
              pytest.mark.usefixtures("one_thread")]


def _rows(out_dir) -> list[dict[str, str]]:
    with open(Path(out_dir) / "predictions.csv") as f:
        return list(csv.DictReader(f))


def _copy_classes(src: Path, dest: Path, names: dict[str, str], n: int | None = None) -> list[Path]:
    """Copy class folders ``{source name: new name}`` (the first ``n`` photos of each) to ``dest``."""
    out = []
    for old, new in names.items():
        (dest / new).mkdir(parents=True, exist_ok=True)
        for f in sorted((src / old).glob("*.jpg"))[:n]:
            shutil.copy(f, dest / new / f.name)
            out.append(dest / new / f.name)
    return out


def test_evaluate_writes_the_files_and_agrees_with_predict(tiny_run, colour_photos, tmp_path):
    result = evaluate_run(tiny_run, colour_photos, cache_dir=tmp_path / "cache")
    out = Path(result["out_dir"])
    assert out == tiny_run / "eval" / f"{colour_photos.name}-test" and result["split"] == "test"
    for name in ("metrics.json", "classification_report.json", "classification_report.txt", "confusion_matrix.png",
                 "top_losses.png", "predictions.csv"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["top1"] == result["top1"] and saved["num_samples"] == 12 == len(_rows(out))
    report = json.loads((out / "classification_report.json").read_text())
    assert report["macro avg"]["f1-score"] == pytest.approx(result["macro_f1"])
    assert sum(report[c]["support"] for c in result["classes_evaluated"]) == 12
    assert "Red-Bird" in (out / "classification_report.txt").read_text()
    with PIL.Image.open(out / "confusion_matrix.png") as im:
        assert im.size[0] > 200
    # the same photos through Predictor: the same top-1 label and probability for every photo
    rows = _rows(out)
    preds = load_trained(tiny_run, device="cpu").predict([r["path"] for r in rows], top_k=5)
    assert [p[0][0] for p in preds] == [r["predicted"] for r in rows]
    assert [p[0][1] for p in preds] == pytest.approx([float(r["probability"]) for r in rows], abs=1e-5)
    correct = [r["true"] == r["predicted"] for r in rows]
    assert result["top1"] == pytest.approx(sum(correct) / 12)
    top5 = [r["true"] in [label for label, _ in p] for r, p in zip(rows, preds)]
    assert result["top5"] == pytest.approx(sum(top5) / 12)
    assert [r["true"] for r in rows] == [Path(r["path"]).parent.name for r in rows]  # labels as folder names


def test_subset_of_classes_in_other_spellings(tiny_run, colour_photos, tmp_path):
    photos = tmp_path / "new photos"
    _copy_classes(colour_photos / "test", photos, {"Red-Bird": "red bird", "Grey-Bird": "GREY_BIRD"})
    result = evaluate_run(tiny_run, photos, cache_dir=tmp_path / "cache")
    assert result["split"] == "all" and result["name"] == "new-photos"
    assert result["classes_evaluated"] == ["Grey-Bird", "Red-Bird"] and result["num_samples"] == 6
    rows = _rows(result["out_dir"])
    assert [r["true"] for r in rows] == [{"red bird": "Red-Bird", "GREY_BIRD": "Grey-Bird"}[Path(r["path"]).parent.name]
                                         for r in rows]
    preds = load_trained(tiny_run, device="cpu").predict([r["path"] for r in rows], top_k=1)
    assert [p[0][0] for p in preds] == [r["predicted"] for r in rows]


def test_unknown_classes_are_an_error_or_left_out(tiny_run, colour_photos, tmp_path, capsys):
    photos = tmp_path / "mixed"
    _copy_classes(colour_photos / "test", photos, {"Red-Bird": "Red-Bird", "Blue-Bird": "Purple-Bird"})
    with pytest.raises(DataError, match=r"'Purple-Bird' \(3 photos\).*--ignore-unknown-classes"):
        evaluate_run(tiny_run, photos, cache_dir=tmp_path / "cache")
    assert main(["evaluate", str(tiny_run), str(photos), "--cpu", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "Purple-Bird" in err and "Traceback" not in err
    result = evaluate_run(tiny_run, photos, ignore_unknown_classes=True, cache_dir=tmp_path / "cache")
    assert result["ignored_classes"] == {"Purple-Bird": 3} and result["num_samples"] == 3
    assert result["classes_evaluated"] == ["Red-Bird"]


def test_leak_check_finds_flipped_and_reencoded_training_photos(tiny_run, colour_photos, tmp_path):
    photos = tmp_path / "leaky"
    _copy_classes(colour_photos / "test", photos, {"Red-Bird": "Red-Bird", "Blue-Bird": "Blue-Bird"})
    copies = []
    for cls in ("Red-Bird", "Blue-Bird"):  # two training photos of each class, flipped and re-encoded
        for f in sorted((colour_photos / "train" / cls).glob("*.jpg"))[:2]:
            copies.append(photos / cls / f"copy-{f.stem}.jpg")
            with PIL.Image.open(f) as im:
                im.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT).save(copies[-1], quality=75)
    hashes = tiny_run / "train_hashes.npz"
    hashes.unlink(missing_ok=True)
    result = evaluate_run(tiny_run, photos, cache_dir=tmp_path / "cache")
    leaks = result["leak_check"]
    assert leaks["status"] == "done" and "config.json" in leaks["train_hashes"] and hashes.is_file()
    # every copy of a photo the run trained on is found (those carved into validation are not training photos)
    train_split = load_image_dataset(colour_photos, val_fraction=0.25, seed=0)["train"]
    trained_on = {Path(v["path"]).name + Path(v["path"]).parent.name
                  for v in train_split.cast_column("image", datasets.Image(decode=False))["image"]}
    expected = {str(c) for c in copies if c.name.removeprefix("copy-") + c.parent.name in trained_on}
    found = {r["path"] for r in _rows(result["out_dir"]) if int(r["train_hash_distance"]) <= leaks["max_distance"]}
    assert found == expected and len(expected) >= 1 and leaks["near_duplicates"] == len(found)
    trained = found
    rest = [r for r in _rows(result["out_dir"]) if r["path"] not in trained]
    assert leaks["without_near_duplicates"]["num_samples"] == len(rest) == 6 + 4 - len(trained)
    assert leaks["without_near_duplicates"]["top1"] == pytest.approx(
        sum(r["true"] == r["predicted"] for r in rest) / len(rest))
    # the second time the saved hashes are used
    again = evaluate_run(tiny_run, photos, name="again", cache_dir=tmp_path / "cache")
    assert "of the run" in again["leak_check"]["train_hashes"]
    assert again["leak_check"]["near_duplicates"] == leaks["near_duplicates"]
    off = evaluate_run(tiny_run, photos, name="off", leak_check=False, cache_dir=tmp_path / "cache")
    assert off["leak_check"] == {"status": "off"} and off["top1"] == result["top1"]


def test_hashes_from_the_training_cache_match(tiny_run, colour_photos, tmp_path):
    ds = load_image_dataset(colour_photos, val_fraction=0.25, cache_dir=tmp_path / "cache")
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    write_train_hashes(run, cache_split(ds["train"], 32, cache_dir=tmp_path / "cache"))  # as the trainer would
    photos = tmp_path / "copies" / "Green-Bird"
    photos.mkdir(parents=True)
    for f in ds["train"].cast_column("image", datasets.Image(decode=False))["image"][:3]:
        shutil.copy(f["path"], photos / Path(f["path"]).name)
    _copy_classes(colour_photos / "test", tmp_path / "copies", {"Red-Bird": "Red-Bird"})
    leaks = evaluate_run(run, tmp_path / "copies", cache_dir=tmp_path / "cache")["leak_check"]
    assert "of the run" in leaks["train_hashes"] and leaks["near_duplicates"] == 3


def test_flip_tta_is_shared_with_predict(tiny_run, colour_photos, tmp_path):
    result = evaluate_run(tiny_run, colour_photos, tta="flip", name="flip", cache_dir=tmp_path / "cache")
    rows = _rows(result["out_dir"])
    predictor = load_trained(tiny_run, device="cpu")
    flipped = predictor.predict([r["path"] for r in rows], top_k=1, tta="flip")
    assert [p[0][0] for p in flipped] == [r["predicted"] for r in rows] and result["tta"] == "flip"
    assert [p[0][1] for p in flipped] == pytest.approx([float(r["probability"]) for r in rows], abs=1e-5)
    plain = predictor.predict([r["path"] for r in rows], top_k=1)
    assert [p[0][1] for p in plain] != pytest.approx([p[0][1] for p in flipped], abs=1e-7)
    with pytest.raises(ValueError, match="tta='mirror'.*none, flip"):
        evaluate_run(tiny_run, colour_photos, tta="mirror")


def test_cli_evaluate_prints_the_summary(tiny_run, colour_photos, tmp_path, capsys):
    assert main(["evaluate", str(tiny_run), str(colour_photos), "--split", "train", "--name", "cli", "--cpu",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "cli:" in out and "top-1" in out and "macro-F1" in out and "near-duplicates of training photos" in out
    metrics = json.loads((tiny_run / "eval" / "cli" / "metrics.json").read_text())
    # the train folder's 32 photos: the run trained on 24 of them (8 were carved into validation)
    assert metrics["split"] == "train" and metrics["num_samples"] == 32
    assert metrics["leak_check"]["near_duplicates"] == 24
    assert metrics["leak_check"]["without_near_duplicates"]["num_samples"] == 8
    assert main(["evaluate", str(tiny_run), str(colour_photos), "--name", "cli-json", "--json", "--no-leak-check",
                 "--cpu", "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "cli-json" and printed["leak_check"] == {"status": "off"} and printed["split"] == "test"
    assert main(["evaluate", str(tiny_run), str(colour_photos), "--split", "validation", "--cpu"]) == 2
    assert "no 'validation' photos" in capsys.readouterr().err


def test_the_runs_own_validation_split_gives_the_runs_best_val_top1(tiny_run, colour_photos, tmp_path,
                                                                       capsys):
    # no data: the run's own photos, split as training split them (validation carved with its seed)
    result = evaluate_run(tiny_run, split="validation", leak_check=False, cache_dir=tmp_path / "cache")
    best = json.loads((tiny_run / "metrics.json").read_text())["best_val_top1"]
    assert result["split"] == "validation" and result["num_samples"] == 8
    assert result["top1"] == pytest.approx(best) and "run's own data" in result["data"]
    assert Path(result["out_dir"]).name.endswith("-validation")
    cli_tta = ["evaluate", str(tiny_run), "--split", "validation", "--tta", "flip", "--name", "own-flip",
               "--no-leak-check", "--cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(cli_tta) == 0 and "(tta: flip)" in capsys.readouterr().out
    default = evaluate_run(tiny_run, name="own-test", cache_dir=tmp_path / "cache")  # the run's test split
    assert default["split"] == "test" and default["num_samples"] == 12
    assert default["leak_check"]["near_duplicates"] == 0
    copy = tmp_path / "no-config"
    shutil.copytree(tiny_run, copy)
    (copy / "config.json").unlink()
    with pytest.raises(DataError, match="config.json does not exist.*name the photos"):
        evaluate_run(copy, split="validation")
    # a relative data path is relative to where training ran: from elsewhere, say so and how to go on
    config = json.loads((tiny_run / "config.json").read_text())
    moved = tmp_path / "relative"
    shutil.copytree(tiny_run, moved)
    (moved / "config.json").write_text(json.dumps({**config, "data": "../photos-from-elsewhere/train"}))
    # data_report.json records the absolute folder training loaded: used, with a warning that says so
    with pytest.warns(UserWarning, match="relative path '../photos-from-elsewhere/train'.*folder training loaded"):
        found = evaluate_run(moved, split="validation", leak_check=False, cache_dir=tmp_path / "cache")
    assert found["top1"] == pytest.approx(best)
    (moved / "data_report.json").unlink()  # nothing recorded: stop, and say what to do
    with pytest.raises(DataError, match="relative path '../photos-from-elsewhere/train'.*folder training ran in"):
        evaluate_run(moved, split="validation", leak_check=False)
    # without train_hashes.npz the leak check loads those training photos: skipped, and it says why
    (moved / "train_hashes.npz").unlink()
    leak = evaluate_run(moved, colour_photos, name="moved", cache_dir=tmp_path / "cache")["leak_check"]
    assert leak["status"] == "skipped" and "folder training ran in" in leak["reason"]


def test_real_photo_subset_with_a_kaggle_spelling(tmp_path, shared_data):
    """A run trained on Birds_25 folder names, evaluated on a few real test photos of two of its classes,
    one folder spelt as in the original Kaggle data."""
    import torch

    from effv2birds import TrainConfig
    from effv2birds.training import train

    mini = shared_data / "birds25-mini"
    classes = ("Hoopoe", "Ruddy-Shelduck", "Sarus-Crane")
    train_dir = tmp_path / "birds" / "train"
    for cls in classes:
        (train_dir / cls).mkdir(parents=True)
        for f in sorted((mini / "train" / cls).glob("*.jpg"))[:6]:
            (train_dir / cls / f.name).symlink_to(f)
    run = tmp_path / "run"
    train(TrainConfig(data=str(tmp_path / "birds"), image_size=32, batch_size=8, epochs=1, max_steps=2,
                      val_fraction=0.2, test_fraction=0.0, width_multiplier=0.25, depth_multiplier=0.1,
                      progress_bar=False, log_with="none", cpu=True, cache_dir=str(tmp_path / "cache"),
                      output_dir=str(run)))
    photos = tmp_path / "new"
    for cls, spelling in (("Ruddy-Shelduck", "Ruddy Shelduck"), ("Hoopoe", "Hoopoe")):
        (photos / spelling).mkdir(parents=True)
        for f in sorted((mini / "test" / cls).glob("*.jpg"))[:5]:
            (photos / spelling / f.name).symlink_to(f)
    result = evaluate_run(run, photos, cache_dir=tmp_path / "cache")
    assert load_trained(run).class_names == list(classes)
    assert result["classes_evaluated"] == ["Hoopoe", "Ruddy-Shelduck"] and result["num_samples"] == 10
    rows = _rows(result["out_dir"])
    preds = load_trained(run, device="cpu").predict([r["path"] for r in rows], top_k=1)
    assert [p[0][0] for p in preds] == [r["predicted"] for r in rows]
    # the test photos are no near-duplicates of training photos (shared/data/README.md)
    assert result["leak_check"]["near_duplicates"] == 0
    assert torch.get_num_threads() == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_count_every_photo_once(tiny_run, colour_photos, tmp_path):
    photos = tmp_path / "odd"
    _copy_classes(colour_photos / "test", photos, {c: c for c in ("Red-Bird", "Blue-Bird", "Green-Bird")})
    _copy_classes(colour_photos / "train", photos, {"Grey-Bird": "Grey-Bird"}, n=2)  # 11 photos
    cache = str(tmp_path / "cache")
    one = evaluate_run(tiny_run, photos, name="one", batch_size=4, cache_dir=cache)
    assert one["num_samples"] == 11
    # 2 processes x batches of 4: the last step is padded, gather_for_metrics must drop the padding
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "effv2birds", "evaluate", str(tiny_run), str(photos),
           "--name", "two", "--batch-size", "4", "--cpu", "--cache-dir", cache]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("two: 11 photos") == 1  # printed once, by the main process
    two = json.loads((tiny_run / "eval" / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and two["num_samples"] == 11
    for key in ("top1", "top5", "macro_f1", "per_class_accuracy", "confusion_matrix", "classes_evaluated"):
        assert two[key] == one[key], key
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)
    assert _rows(tiny_run / "eval" / "two") == _rows(one["out_dir"])


def _rewrite_metadata(src: Path, dest: Path, preprocessing: dict, drop=("transforms",)) -> Path:
    """A copy of run ``src`` whose weights carry ``preprocessing`` (and none of ``drop``) as metadata."""
    from effv2birds.training.records import read_weights, save_weights

    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    for which in ("best", "last"):
        state, meta = read_weights(src / "model" / f"{which}.safetensors")
        meta = {k: v for k, v in meta.items() if k not in drop}
        save_weights(state, dest / "model" / f"{which}.safetensors", {**meta, "preprocessing": preprocessing})
    return dest


def test_the_new_metadata_form_evaluates_identically(tiny_run, colour_photos, tmp_path):
    from effv2birds import TrainConfig
    from effv2birds.preprocessing import Preprocessing

    # what train() records from now on: one "preprocessing" entry, the object's dict, no "transforms"
    new = Preprocessing.from_config(TrainConfig.from_file(tiny_run / "config.json"))
    run = _rewrite_metadata(tiny_run, tmp_path / "new-run", new.to_dict())
    old = evaluate_run(tiny_run, colour_photos, name="old-form", leak_check=False, cache_dir=tmp_path / "cache")
    got = evaluate_run(run, colour_photos, name="new-form", leak_check=False, cache_dir=tmp_path / "cache")
    assert load_trained(run, device="cpu").preprocessing == new == load_trained(tiny_run, device="cpu").preprocessing
    for key in ("top1", "top5", "macro_f1", "loss", "num_samples", "image_size", "confusion_matrix"):
        assert got[key] == old[key], key
    assert [{k: r[k] for k in r if k != "path"} for r in _rows(got["out_dir"])] == \
        [{k: r[k] for k in r if k != "path"} for r in _rows(old["out_dir"])]


def test_evaluate_model_takes_the_runs_preprocessing(tiny_run):
    import torch
    from accelerate import Accelerator

    from effv2birds.data import CachedSplit, make_loader
    from effv2birds.training import evaluate_model

    predictor = load_trained(tiny_run, device="cpu")
    pre = predictor.preprocessing
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, pre.input_size, pre.input_size), dtype=torch.uint8, generator=gen)
    split = CachedSplit(images, torch.arange(10) % 4, predictor.class_names, pre.input_size)
    acc = Accelerator(cpu=True)
    model, loader = acc.prepare(predictor.model, make_loader(split, 4, shuffle=False))
    kw = dict(channels_last=False, num_classes=4)
    with_object = evaluate_model(model, loader, acc, preprocessing=pre, **kw)
    # the keywords train() passed before Preprocessing, still accepted
    with_keywords = evaluate_model(model, loader, acc, mean=list(pre.mean), std=list(pre.std),
                                   normalize=pre.normalize, **kw)
    assert with_object == with_keywords and with_object["num_samples"] == 10
    probs = predictor.probabilities(images)
    assert with_object["top1"] == pytest.approx((probs.argmax(-1) == torch.arange(10) % 4).float().mean().item())
    with pytest.raises(TypeError, match="not both"):
        evaluate_model(model, loader, acc, preprocessing=pre, mean=pre.mean, std=pre.std, **kw)
    with pytest.raises(TypeError, match="needs preprocessing"):
        evaluate_model(model, loader, acc, **kw)
