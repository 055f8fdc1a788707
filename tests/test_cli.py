"""The `effv2birds` command: every config field as a flag, --config with overrides, train, predict."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from effv2birds.cli import build_config, build_parser, main
from effv2birds.config import ProgressiveConfig, TrainConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _train_flags():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    return {opt for a in sub._actions for opt in a.option_strings}


def test_every_config_field_is_a_flag():
    flags = _train_flags()
    for f in dataclasses.fields(TrainConfig):
        if f.name != "progressive":
            assert "--" + f.name.replace("_", "-") in flags, f.name
    for f in dataclasses.fields(ProgressiveConfig):
        assert "--progressive-" + f.name.replace("_", "-") in flags, f.name
    assert {"--config", "--progressive", "--no-hflip", "--hflip"} <= flags


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "c.toml"
    TrainConfig(image_size=64, epochs=7, lr=0.01, progressive=ProgressiveConfig.from_preset("low-res")).save(tmp_path)
    path = tmp_path / "config.toml"
    args = build_parser().parse_args(["train", "--config", str(path), "--epochs", "3", "--mixed-precision", "bf16",
                                      "--progressive-stages", "2", "--grad-clip", "none", "--channels-last", "false"])
    cfg = build_config(args)
    assert (cfg.image_size, cfg.epochs, cfg.lr, cfg.mixed_precision) == (64, 3, 0.01, "bf16")
    assert cfg.progressive.stages == 2 and cfg.progressive.size_end == 128  # file values kept
    assert cfg.grad_clip is None and cfg.channels_last is False


def test_friendly_errors_not_tracebacks(tmp_path, capsys):
    assert main(["train", "--image-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "image_size=0" in err and "Traceback" not in err
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "no-such-folder"), "--output-dir", str(tmp_path / "r"),
                 "--log-with", "none", "--no-progress-bar"]) == 2
    err = capsys.readouterr().err
    assert "no-such-folder" in err and "Traceback" not in err
    assert main(["predict", str(tmp_path / "no-run"), "x.jpg"]) == 2
    assert "model/best.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse rejects a bad choice with its usage message
        main(["train", "--optimizer", "lion"])


@pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning")
def test_train_then_predict_from_the_command_line(tmp_path, capsys):
    import PIL.Image

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "effv2birds", "train", "--data", "synthetic", "--synthetic-size", "48",
           "--max-samples", "48", "--image-size", "32", "--batch-size", "8", "--epochs", "1", "--max-steps", "2",
           "--width-multiplier", "0.25", "--depth-multiplier", "0.1", "--no-progress-bar", "--log-with", "none",
           "--cpu", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run directory" in proc.stdout
    assert TrainConfig.from_file(run / "config.toml").max_steps == 2

    images = [tmp_path / "red.png", tmp_path / "blue.jpg"]
    PIL.Image.new("RGB", (60, 40), (220, 20, 20)).save(images[0])
    PIL.Image.new("RGB", (40, 60), (20, 20, 220)).save(images[1])
    if (SHARED / "birds25-mini").is_dir():
        images.append(next((SHARED / "birds25-mini").rglob("*.jpg")))
    # predict in this process (the console entry point itself was exercised by `train` above)
    assert main(["predict", str(run), *map(str, images), "--top-k", "2", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = json.loads((run / "model" / "best.json").read_text())["class_names"]
    assert [o["image"] for o in out] == list(map(str, images))
    for o in out:
        assert len(o["top_k"]) == 2 and all(t["label"] in names for t in o["top_k"])
        assert o["top_k"][0]["probability"] >= o["top_k"][1]["probability"]
    assert main(["predict", str(run), str(images[0]), "--top-k", "1"]) == 0
    table = capsys.readouterr().out
    assert str(images[0]) in table and "%" in table
    # an unreadable image is reported naming the file, not a traceback (exit 1: some image failed)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert main(["predict", str(run), str(tmp_path / "bad.jpg")]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "Traceback" not in err
