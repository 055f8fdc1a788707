"""After training, on real photos: predict a folder of odd real files to CSV, export to ONNX and
TorchScript and get the same top-1 on real photos as predict, and a Hub folder that loads back.
Skips without ../shared/data."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from effv2birds import TrainConfig, export_run
from effv2birds.cli import main
from effv2birds.training import load_trained, train

pytestmark = [pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
              pytest.mark.usefixtures("one_thread")]

CLASSES = ("Hoopoe", "Indian-Peacock", "Sarus-Crane")


@pytest.fixture(scope="module")
def real_run(shared_data, tmp_path_factory):
    """A tiny run trained a few steps on 8 real training photos of each of three species (default init:
    with a zero-initialised head a few steps leave the logits near 0 and every comparison trivial)."""
    root = tmp_path_factory.mktemp("real-run")
    for cls in CLASSES:
        (root / "birds" / "train" / cls).mkdir(parents=True)
        for f in sorted((shared_data / "birds25-mini" / "train" / cls).glob("*.jpg"))[:8]:
            (root / "birds" / "train" / cls / f.name).symlink_to(f)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(data=str(root / "birds"), image_size=32, batch_size=8, epochs=2, val_fraction=0.25,
                          test_fraction=0.0, width_multiplier=0.25, depth_multiplier=0.1, zero_init_residual=False,
                          progress_bar=False, log_with="none", cpu=True, cache_dir=str(root / "cache"),
                          output_dir=str(root / "run")))
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def _real_test_photos(shared_data, n: int = 4) -> list:
    return [f for cls in CLASSES for f in sorted((shared_data / "birds25-mini" / "test" / cls).glob("*.jpg"))[:n]]


def test_predict_a_folder_of_odd_real_files_to_csv(real_run, shared_data, tmp_path, capsys):
    odd = shared_data / "odd-images"
    out = tmp_path / "preds.csv"
    code = main(["predict", str(real_run), str(odd), "--output", str(out), "--top-k", "2", "--device", "cpu"])
    err = capsys.readouterr().err
    rows = list(csv.DictReader(open(out)))
    manifest = list(csv.DictReader(open(odd / "MANIFEST.csv")))
    assert len(rows) == len(manifest)  # every image file has its row, the undecodable ones included
    undecodable = {m["relpath"].rsplit("/", 1)[-1] for m in manifest if "truncated" in m["relpath"]}
    assert {r["path"].rsplit("/", 1)[-1] for r in rows if r["error"]} == undecodable
    assert code == 1 and all(name in err for name in undecodable) and "Traceback" not in err
    good = [r for r in rows if not r["error"]]
    assert all(r["label_1"] in CLASSES and 0.0 < float(r["probability_1"]) <= 1.0 for r in good)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_gives_predicts_top1_on_real_photos(real_run, shared_data, tmp_path, fmt):
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
    result = export_run(real_run, fmt, tmp_path / f"birds.{'onnx' if fmt == 'onnx' else 'pt'}")
    assert max(result.checks.values()) <= 1e-4
    sidecar = json.loads(result.output.with_name(result.output.name + ".json").read_text())
    predictor = load_trained(real_run, device="cpu")
    photos = _real_test_photos(shared_data)
    # what a deployment does with the sidecar: decode + resize as the run did, scale, normalise
    batch = torch.stack([predictor.load_image(p) for p in photos]).float() / 255
    mean, std = torch.tensor(sidecar["mean"])[:, None, None], torch.tensor(sidecar["std"])[:, None, None]
    inputs = ((batch - mean) / std if sidecar["normalize"] else batch).contiguous()
    if fmt == "onnx":
        session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
        logits = session.run([sidecar["output_name"]], {sidecar["input_name"]: inputs.numpy()})[0]
    else:
        logits = torch.jit.load(str(result.output))(inputs).detach().numpy()
    exported = [sidecar["class_names"][i] for i in np.argmax(logits, axis=1)]
    assert exported == [p[0][0] for p in predictor.predict(photos, top_k=1)]
    probs = torch.softmax(torch.as_tensor(logits), dim=1)
    expected = predictor.probabilities(torch.stack([predictor.load_image(p) for p in photos]))
    assert torch.allclose(probs, expected, atol=1e-5)  # not only the argmax: the probabilities too


def test_hub_folder_of_a_real_photo_run_loads_back(real_run, shared_data, tmp_path):
    result = export_run(real_run, "hub", tmp_path / "hub")
    names = sorted(p.name for p in result.output.iterdir())
    assert {"model.safetensors", "config.json", "README.md"} <= set(names)
    config = json.loads((result.output / "config.json").read_text())
    assert config["num_classes"] == 3 and config["label_names"] == list(CLASSES)
    photos = _real_test_photos(shared_data, n=2)
    again = load_trained(result.output, device="cpu").predict(photos, top_k=3)
    original = load_trained(real_run, device="cpu").predict(photos, top_k=3)
    assert [[label for label, _ in p] for p in again] == [[label for label, _ in p] for p in original]
    assert np.allclose([[v for _, v in p] for p in again], [[v for _, v in p] for p in original], atol=1e-6)
