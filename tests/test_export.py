"""`effv2birds export`: ONNX and TorchScript files that compute what PyTorch computes, a Hub folder that
timm and load_trained load with identical outputs, and a push that fails fast offline."""

import json
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

pytestmark = [pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
              pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]

from effv2birds import TrainConfig, export_run
from effv2birds.cli import main
from effv2birds.export import ExportError
from effv2birds.training import load_trained, train
from effv2birds.training.records import read_weights

# zero_init_residual=False: after 2 steps from a zero head the logits would be nearly 0, and every
# export would trivially "match"; with the default init they are O(1)
TINY = dict(data="synthetic", synthetic_size=60, max_samples=25, width_multiplier=0.25, depth_multiplier=0.1,
            max_steps=2, image_size=32, batch_size=8, log_with="none", progress_bar=False, cpu=True,
            zero_init_residual=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny finished run per backend: {"torchvision": run_dir, "timm": run_dir}."""
    root = tmp_path_factory.mktemp("export-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for backend, model in (("torchvision", "torchvision/efficientnet_v2_s"), ("timm", "timm/tf_efficientnetv2_s")):
        cfg = TrainConfig(**TINY, model=model, cache_dir=str(root / "cache"),
                          output_dir=str(root / backend))
        out[backend] = train(cfg).run_dir
    yield out
    torch.set_num_threads(threads)


def _photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    PIL.Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_onnx_matches_pytorch_with_dynamic_batch_and_preprocessing_beside(runs, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "model.onnx"
    result = export_run(runs["torchvision"], "onnx", out)
    assert result.files == [out, tmp_path / "model.onnx.json"] and out.is_file()
    assert 0 <= result.checks["onnxruntime"] <= 1e-4
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    _, meta = read_weights(Path(runs["torchvision"]) / "model" / "best.safetensors")
    for key in ("image_size", "resize", "mean", "std", "normalize"):
        assert side[key] == meta["preprocessing"][key], key
    # the run's Preprocessing, whichever metadata form the run was saved with
    pre = load_trained(runs["torchvision"], device="cpu").preprocessing
    assert {k: side[k] for k in pre.to_dict()} == pre.to_dict() and pre.mean_std_source.startswith("torchvision ")
    assert side["interpolation"] == "bilinear"
    assert side["class_names"] == meta["class_names"] and side["input_name"] == "pixel_values"
    assert side["check"]["max_abs_difference"]["onnxruntime"] == result.checks["onnxruntime"]
    # the input is the normalised NCHW tensor the PyTorch model takes; the batch size is free
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)
    predictor = load_trained(runs["torchvision"], device="cpu")
    images = torch.stack([predictor.load_image(_photo(tmp_path / "a.png"))] * 5)
    from effv2birds.data import to_model_input

    p = predictor.preprocessing
    x = to_model_input(images, mean=p.mean, std=p.std, normalize=p.normalize)
    assert torch.equal(x, p.to_model_input(images))
    logits = torch.from_numpy(session.run(["logits"], {"pixel_values": x.numpy()})[0])
    assert logits.shape == (5, len(predictor.class_names)) and logits.abs().max() > 1e-3  # not a trivial output
    assert torch.allclose(logits.softmax(-1), predictor.probabilities(images), atol=1e-5)


def test_torchscript_matches_eager_and_carries_its_preprocessing(runs, tmp_path):
    out = tmp_path / "model.pt"
    result = export_run(runs["timm"], "torchscript", out)
    assert result.checks["torch.jit.load"] <= 1e-4
    extra = {"effv2birds.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["effv2birds.json"])["class_names"] == load_trained(runs["timm"]).class_names
    model = load_trained(runs["timm"], device="cpu").model.to(memory_format=torch.contiguous_format)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)
    assert json.loads((tmp_path / "model.pt.json").read_text())["format"] == "torchscript"


def test_an_export_that_differs_from_pytorch_fails_loudly_and_is_not_kept(runs, tmp_path, monkeypatch, capsys):
    from effv2birds.export import graph

    monkeypatch.setattr(graph, "max_abs_difference", lambda *a, **k: 0.25)
    out = tmp_path / "model.pt"
    with pytest.raises(ExportError, match=r"max abs difference of the logits 0\.25 > tolerance 0\.0001"):
        export_run(runs["timm"], "torchscript", out)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its JSON nor a temporary file
    assert main(["export", str(runs["timm"]), "--format", "torchscript", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "0.25 > tolerance" in err and "Traceback" not in err


def test_missing_onnx_packages_name_the_pip_command_before_any_work(monkeypatch, tmp_path):
    import importlib.util

    from effv2birds.export import errors

    real = importlib.util.find_spec
    monkeypatch.setattr(errors.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    # a run that does not exist: the package check comes first
    with pytest.raises(ExportError, match=r"needs onnxruntime, which is not installed: pip install .effv2birds.export"):
        export_run(tmp_path / "no-run", "onnx", tmp_path / "m.onnx")


def test_hub_folder_loads_in_plain_timm_with_identical_outputs(runs, tmp_path):
    import timm
    from huggingface_hub import ModelCard

    folder = tmp_path / "birds-timm"
    result = export_run(runs["timm"], "hub", folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert result.checks == {"load_trained": 0.0, "timm local-dir": 0.0}
    config = json.loads((folder / "config.json").read_text())
    predictor = load_trained(runs["timm"], device="cpu")
    assert config["architecture"] == "tf_efficientnetv2_s" and config["num_classes"] == len(predictor.class_names)
    assert config["label_names"] == predictor.class_names
    # one preprocessing record, the run's; not the "transforms" older runs also carried (never used in training)
    assert config["effv2birds"]["preprocessing"] == predictor.preprocessing.to_dict()
    assert "transforms" not in config["effv2birds"]
    assert predictor.preprocessing.mean_std_source.startswith("timm tf_efficientnetv2_s")

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    ours = predictor.model.to(memory_format=torch.contiguous_format)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), ours(x)) and ours(x).abs().max() > 1e-3
    # timm's own preprocessing from pretrained_cfg gives the tensor effv2birds feeds the model
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert tuple(data_cfg["input_size"]) == (3, 32, 32) and data_cfg["interpolation"] == "bilinear"
    assert data_cfg["crop_mode"] == "squash" and data_cfg["crop_pct"] == 1.0
    transform = timm.data.create_transform(**data_cfg)
    photo = _photo(tmp_path / "p.png")
    from effv2birds.data import to_model_input

    p = predictor.preprocessing
    want = to_model_input(predictor.load_image(photo)[None], mean=p.mean, std=p.std, normalize=p.normalize)
    assert torch.allclose(transform(PIL.Image.open(photo).convert("RGB"))[None], want, atol=1e-5)

    # load_trained loads the folder too, and predicts what the run predicts
    assert load_trained(folder, device="cpu").predict([photo], top_k=3) == predictor.predict([photo], top_k=3)
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "timm" and card.data.pipeline_tag == "image-classification"
    assert 'timm.create_model("local-dir:' in card.text


def test_the_cards_timm_snippet_feeds_a_photo_size_run_what_effv2birds_feeds_it(tmp_path):
    """A run trained on 16 px photos at a 32 px input: timm's pretrained_cfg only knows the 32 px input, so the
    card's snippet makes the photo 16 px first; run as written, it gives the tensor effv2birds gives."""
    import re

    import timm
    from huggingface_hub import ModelCard

    from effv2birds.data import to_model_input

    cfg = TrainConfig(**{**TINY, "max_steps": 1}, model="timm/tf_efficientnetv2_s", photo_size=16,
                      cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    run = train(cfg).run_dir
    folder = tmp_path / "hub"
    export_run(run, "hub", folder)
    card = ModelCard.load(folder / "README.md").text
    snippet = re.search(r"With timm alone.*?```python\n(.*?)```", card, re.S).group(1)
    assert "v2.Resize((16, 16))" in snippet
    scope: dict = {}
    exec(snippet.replace("local-dir:path/to/hub", f"local-dir:{folder}"), scope)
    photo = _photo(tmp_path / "p.png")
    predictor = load_trained(run, device="cpu")
    p = predictor.preprocessing
    want = to_model_input(predictor.load_image(photo)[None], mean=p.mean, std=p.std, normalize=p.normalize)
    assert (p.photo_size, p.input_size) == (16, 32)
    assert torch.allclose(scope["transform"](PIL.Image.open(photo).convert("RGB"))[None], want, atol=1e-5)
    without = timm.data.create_transform(**timm.data.resolve_data_config({}, model=scope["model"]))
    assert not torch.allclose(without(PIL.Image.open(photo).convert("RGB"))[None], want, atol=1e-2)


def test_hub_folder_of_a_torchvision_run_loads_with_load_trained_and_has_test_results(runs, tmp_path):
    from huggingface_hub import ModelCard

    folder = tmp_path / "birds-tv"
    result = export_run(runs["torchvision"], "hub", folder)
    assert result.checks == {"load_trained": 0.0}  # plain timm cannot build torchvision's model
    photo = _photo(tmp_path / "p.png")
    run, hub = load_trained(runs["torchvision"], device="cpu"), load_trained(folder, device="cpu")
    assert hub.predict([photo], top_k=5) == run.predict([photo], top_k=5)
    assert hub.preprocessing == run.preprocessing and hub.class_names == run.class_names
    test = json.loads((Path(runs["torchvision"]) / "metrics.json").read_text())["test"]
    card = ModelCard.load(folder / "README.md")
    results = {r.metric_type: r for r in card.data.eval_results}
    assert results["accuracy"].metric_value == round(test["top1"], 4)
    assert results["f1"].metric_value == round(test["macro_f1"], 4)
    assert results["accuracy"].dataset_split == "test" and card.data.model_name == "birds-tv"
    # an exported folder exports again (e.g. ONNX from what was downloaded from the Hub)
    assert export_run(folder, "torchscript", tmp_path / "again.pt").checks["torch.jit.load"] <= 1e-4


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["offline-mode", "unreachable-endpoint"])
def test_push_to_hub_fails_fast_offline_before_any_work(runs, tmp_path, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("EFFV2BIRDS_OFFLINE", raising=False)
    if "HF_HUB_OFFLINE" not in env:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(ExportError, match="cannot push to the Hugging Face Hub: .*hf upload"):
        export_run(runs["timm"], "hub", tmp_path / "hub", push_to_hub="someone/birds")
    assert time.perf_counter() - start < 10  # the client's retries would take minutes
    assert not (tmp_path / "hub").exists()


def test_export_refuses_bad_requests_with_the_fix(runs, tmp_path, capsys):
    with pytest.raises(ExportError, match="choose one of onnx, torchscript, hub"):
        export_run(runs["timm"], "tflite", tmp_path / "m")
    with pytest.raises(ExportError, match="use format='hub'"):
        export_run(runs["timm"], "onnx", tmp_path / "m.onnx", push_to_hub="a/b")
    with pytest.raises(ExportError, match="writes one file"):
        export_run(runs["timm"], "torchscript", tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="writes a folder"):
        export_run(runs["timm"], "hub", tmp_path / "file")
    out = tmp_path / "m.pt"
    assert main(["export", str(runs["timm"]), "--format", "torchscript", "--output", str(out)]) == 0
    assert "torch.jit.load vs PyTorch: max abs difference" in capsys.readouterr().out
    assert main(["export", str(runs["timm"]), "--format", "torchscript", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(runs["timm"]), "--format", "torchscript", "--output", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("resize,photo_size,want", [
    ("resize", None, "transform = timm.data.create_transform(**config)"),
    ("resize_crop", None, "pixel off"),
    ("resize_crop", 16, "v2.Compose([v2.Resize(16), v2.CenterCrop(16), timm.data.create_transform(**config)])"),
])
def test_the_cards_timm_snippet_is_python_for_every_resize_policy(resize, photo_size, want):
    """Each variant of the snippet compiles; a centre crop says it can sit a pixel off effv2birds' (measured: the
    long side is truncated by torchvision, rounded by effv2birds)."""
    from types import SimpleNamespace

    from effv2birds.export.hub import _timm_use
    from effv2birds.preprocessing import Preprocessing

    pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, resize=resize, photo_size=photo_size)
    snippet = _timm_use(SimpleNamespace(preprocessing=pre), "local-dir:x")
    code = snippet.split("```python\n")[1].split("```")[0]
    compile(code, "card", "exec")
    assert want in code and (("pixel off" in code) == (resize == "resize_crop"))
