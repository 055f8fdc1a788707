"""A Hugging Face Hub folder of a trained run, in timm's layout, and its upload.

The folder holds ``model.safetensors``, ``config.json`` (timm's keys: ``architecture``,
``num_classes``, ``label_names``, ``model_args``, ``pretrained_cfg`` with ``input_size``, ``mean``,
``std``, ``interpolation``, ``crop_pct``, ``crop_mode``; and an ``effv2birds`` section with what
``build_model`` needs) and a ``README.md`` model card (huggingface_hub's ``ModelCard``, the test
figures in its model-index). Plain timm loads a timm-backend run with
``timm.create_model("local-dir:FOLDER", pretrained=True)``; ``load_trained(FOLDER)`` loads every run.

>>> from effv2birds.export.hub import crop_settings
>>> crop_settings("resize"), crop_settings("resize_crop")
({'crop_pct': 1.0, 'crop_mode': 'squash'}, {'crop_pct': 1.0, 'crop_mode': 'center'})
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from effv2birds.atomic import temporary_path
from effv2birds.errors import ConfigError
from effv2birds.model_ids import parse_model_id, saved_model_kwargs

from .errors import ExportError
from .source import ExportResult, ExportSource

__all__ = ["FILES", "crop_settings", "hub_config", "is_hub_folder", "load_hub_predictor", "model_card",
           "push_to_hub", "timm_loadable", "write_hub_folder", "check_hub_reachable"]

FILES = ("model.safetensors", "config.json", "README.md")
FORMAT_VERSION = 1


def crop_settings(resize: str) -> dict[str, Any]:
    """timm's ``crop_pct``/``crop_mode`` for effv2birds' resize policy: "resize" squashes the whole
    photo to the square (timm "squash"), "resize_crop" resizes the short side and keeps the centre."""
    return {"crop_pct": 1.0, "crop_mode": "squash" if resize == "resize" else "center"}


def timm_loadable(source: ExportSource) -> bool:
    """Plain timm can rebuild the architecture from its registry: a timm model of the default variant
    (the study's variants, and torchvision's model, exist only in effv2birds).

    >>> timm_loadable(load_source("runs/demo"))  # doctest: +SKIP
    True
    """
    return _spec(source).backend == "timm" and source.meta["model_kwargs"].get("variant", "default") == "default"


def _spec(source: ExportSource):
    kwargs = saved_model_kwargs(source.meta["model_kwargs"])
    return parse_model_id(kwargs["name"])


def hub_config(source: ExportSource) -> dict[str, Any]:
    """``config.json`` in timm's layout plus the ``effv2birds`` section.

    >>> hub_config(load_source("runs/demo"))["pretrained_cfg"]["input_size"]  # doctest: +SKIP
    [3, 32, 32]
    """
    spec = _spec(source)
    kwargs = saved_model_kwargs(source.meta["model_kwargs"])
    pre = source.preprocessing
    n, size = len(source.class_names), source.image_size
    is_timm = spec.backend == "timm"
    pretrained_cfg = {
        "architecture": spec.arch, "custom_load": False, "input_size": [3, size, size], "fixed_input_size": False,
        "interpolation": pre.INTERPOLATION, **crop_settings(pre.resize),
        # without normalisation the model takes x / 255: mean 0, std 1 in timm's terms
        "mean": list(pre.mean) if pre.normalize else [0.0, 0.0, 0.0],
        "std": list(pre.std) if pre.normalize else [1.0, 1.0, 1.0],
        "num_classes": n, "first_conv": "conv_stem" if is_timm else "features.0.0",
        "classifier": "classifier" if is_timm else "classifier.1", "license": "apache-2.0",
    }
    config: dict[str, Any] = {"architecture": spec.arch, "num_classes": n, "label_names": source.class_names}
    if is_timm:
        config["num_features"] = int(source.model.num_features)
        config["global_pool"] = "avg"
        config["model_args"] = {"channel_multiplier": kwargs.get("width_multiplier", 1.0),
                                "depth_multiplier": kwargs.get("depth_multiplier", 1.0), "num_classes": n}
    config["pretrained_cfg"] = pretrained_cfg
    config["effv2birds"] = {
        "format_version": FORMAT_VERSION, "model_kwargs": kwargs, "class_names": source.class_names,
        "preprocessing": pre.to_dict(), "results": source.results, "data": source.data,
        # not the "transforms" of older runs: training never used their interpolation, crop or flip
        **{k: source.meta[k] for k in ("facts", "epoch", "val_top1") if k in source.meta},
    }
    return config


def _dataset(data: str | None) -> tuple[str, str, list[str] | None]:
    """(type, pretty name, hub ids) of the training data for the card; local paths keep only their name."""
    if not data:
        return "imagefolder", "unknown", None
    if data == "synthetic":
        return "synthetic", "effv2birds synthetic birds", None
    if Path(data).expanduser().exists() or data.startswith((".", "/", "~")):
        return "imagefolder", Path(data).name, None
    return data, data, [data]  # a hub data set id


def model_card(source: ExportSource, name: str, timm_ok: bool, repo_id: str | None = None):
    """The README.md: ``ModelCardData`` with the test (else validation) figures as model-index results.

    >>> model_card(load_source("runs/demo"), "demo", True).data.eval_results[0].metric_type  # doctest: +SKIP
    'accuracy'
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    spec = _spec(source)
    dataset_type, dataset_name, datasets = _dataset(source.data)
    split = "test" if "test" in source.results else "validation"
    figures = source.results.get(split, {})
    evals = [EvalResult(task_type="image-classification", task_name="Image Classification", dataset_type=dataset_type,
                        dataset_name=dataset_name, dataset_split=split, metric_type=metric,
                        metric_value=round(value, 4), metric_name=f"{split} {label}", metric_args=args)
             for key, metric, label, args in (("top1", "accuracy", "top-1 accuracy", None),
                                              ("macro_f1", "f1", "macro-F1", {"average": "macro"}))
             if isinstance(value := figures.get(key), (int, float))]
    data = ModelCardData(library_name="timm" if timm_ok else "effv2birds", license="apache-2.0",
                         pipeline_tag="image-classification", datasets=datasets, metrics=["accuracy", "f1"],
                         tags=["image-classification", "efficientnet_v2", spec.backend, "effv2birds"],
                         model_name=name, eval_results=evals or None)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{_card_body(source, name, timm_ok, repo_id)}")


_TIMM_USE = """With timm alone{also}:
```python
import timm{imports}
model = timm.create_model("{where}", pretrained=True).eval()
config = timm.data.resolve_data_config({{}}, model=model)  # size, mean/std, interpolation, crop
{transform}
```
"""


def _timm_use(source: ExportSource, where: str) -> str:
    """The card's "with timm alone" snippet: timm's own transform from ``pretrained_cfg``, after a resize to
    the photo size when the run fed smaller photos at a larger input (``photo_size``), which timm's
    ``pretrained_cfg`` has no key for."""
    pre, transform = source.preprocessing, "timm.data.create_transform(**config)"
    # measured: exact for "resize"; for "resize_crop" torchvision truncates the resized long side where
    # effv2birds rounds it, so some photos' crop sits a pixel off
    note = ("" if pre.resize == "resize" else "# the centre crop can sit a pixel off effv2birds' "
            "(torchvision truncates the resized long side, effv2birds rounds it)\n")
    if pre.photo_size is None:
        return _TIMM_USE.format(also="", imports="", where=where, transform=f"{note}transform = {transform}")
    photo = pre.photo_size
    first = f"v2.Resize(({photo}, {photo}))" if pre.resize == "resize" else f"v2.Resize({photo}), v2.CenterCrop({photo})"
    return _TIMM_USE.format(
        also=" (and torchvision)", imports="\nfrom torchvision.transforms import v2", where=where,
        transform=f"# trained on photos made {photo} x {photo} px first, then fed at {pre.input_size} px: timm's "
                  f"config cannot say so\n{note}transform = v2.Compose([{first}, {transform}])")


def _card_body(source: ExportSource, name: str, timm_ok: bool, repo_id: str | None) -> str:
    kwargs = source.meta["model_kwargs"]
    nan = float("nan")
    rows = "\n".join(f"| {split} | {v.get('top1', nan):.4f} | {v.get('top5', nan):.4f} | {v.get('macro_f1', nan):.4f} "
                     f"| {v.get('num_samples', 'n/a')} |" for split, v in source.results.items())
    shape = (f"Variant `{kwargs.get('variant', 'default')}`, width x{kwargs.get('width_multiplier', 1.0)}, "
             f"depth x{kwargs.get('depth_multiplier', 1.0)}")
    where = f"hf-hub:{repo_id}" if repo_id else f"local-dir:path/to/{name}"
    fetch = f", e.g. from `hf download {repo_id} --local-dir {name}`" if repo_id else ""
    timm_snippet = (_timm_use(source, where) if timm_ok else
                "Plain timm cannot rebuild this architecture (torchvision's model or one of the study's variants): "
                "load it with effv2birds.\n")
    return f"""
# {name}: EfficientNetV2-S image classifier ({_spec(source).backend} `{_spec(source).arch}`)

Trained with effv2birds on `{_dataset(source.data)[1]}`: {len(source.class_names)} classes,
{source.image_size} px inputs. {shape}.

## Intended use
Classifying photos into the classes below (e.g. bird species). It was trained on a small, specific data set:
expect errors on other kinds of photos and on classes it was never shown (it always answers with one of its
classes). Not for any safety-relevant use.

## Results
| split | top-1 | top-5 | macro-F1 | images |
|---|---|---|---|---|
{rows or "| (none recorded) | | | | |"}

## Preprocessing
{source.preprocessing.describe()}. `config.json` says the same in timm's `pretrained_cfg`.

## How to use
```python
from effv2birds import load_trained
predictor = load_trained("path/to/{name}")   # this folder{fetch}
print(predictor.predict(["photo.jpg"], top_k=3))
```
{timm_snippet}
## Classes
{", ".join(source.class_names)}
"""


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    # contiguous copies that own their storage (channels_last or shared tensors cannot be stored as they are)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


@torch.no_grad()
def _check_folder(folder: Path, source: ExportSource, timm_ok: bool) -> dict[str, float]:
    """Load the folder back with effv2birds (and with plain timm when it can) and compare with the source."""
    from .graph import max_abs_difference, parity_inputs

    inputs = parity_inputs(source.image_size)
    model = load_hub_predictor(folder, device="cpu").model.to(memory_format=torch.contiguous_format)
    checks = {"load_trained": max_abs_difference(model, source.model, inputs)}
    if timm_ok:
        import timm

        plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        checks["timm local-dir"] = max_abs_difference(plain, source.model, inputs)
    return checks


def write_hub_folder(source: ExportSource, output: str | Path, *, tolerance: float = 1e-4,
                     repo_id: str | None = None) -> ExportResult:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``output`` (built in a temporary
    folder beside it and moved into place), then load it back and compare with the source model.
    The card names the model after ``repo_id`` (the repository it is pushed to), else after ``output``.

    >>> write_hub_folder(load_source("runs/demo"), "runs/demo-hub").checks  # doctest: +SKIP
    {'load_trained': 0.0, 'timm local-dir': 0.0}
    """
    from effv2birds.training.records import write_json

    from .graph import PARITY_BATCH_SIZES

    output = Path(output)
    tmp = temporary_path(output)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    timm_ok = timm_loadable(source)
    try:
        _save_weights(source.model, tmp / "model.safetensors")
        write_json(tmp / "config.json", hub_config(source))
        name = repo_id.rsplit("/", 1)[-1] if repo_id else output.name
        model_card(source, name, timm_ok, repo_id).save(tmp / "README.md")
        checks = _check_folder(tmp, source, timm_ok)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bad = {k: v for k, v in checks.items() if not v <= tolerance}
    if bad:
        shutil.rmtree(tmp, ignore_errors=True)
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in bad.items())
        raise ExportError(f"the hub folder of {source.path} does not reproduce the model: max abs difference "
                          f"{diffs} > {tolerance:g}; nothing was written")
    if output.exists():
        shutil.rmtree(output)
    os.replace(tmp, output)
    return ExportResult("hub", output, [output / f for f in FILES], checks, tolerance, PARITY_BATCH_SIZES)


def is_hub_folder(path: str | Path) -> bool:
    """True for a folder with ``model.safetensors`` and ``config.json`` (as ``export --format hub`` writes).

    >>> is_hub_folder("/nonexistent")
    False
    """
    path = Path(path)
    return (path / "model.safetensors").is_file() and (path / "config.json").is_file()


def load_hub_predictor(folder: str | Path, device: str | torch.device | None = None):
    """A ``Predictor`` for a hub folder written by ``effv2birds export --format hub`` (what
    ``load_trained`` calls for such a folder).

    >>> load_hub_predictor("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent has no config.json; ...
    """
    from safetensors.torch import load_file

    from effv2birds.models import build_model
    from effv2birds.preprocessing import Preprocessing
    from effv2birds.training.inference import Predictor

    folder = Path(folder).expanduser()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        missing = "config.json" if not (folder / "config.json").is_file() else "model.safetensors"
        raise FileNotFoundError(f"{folder} has no {missing}; pass a folder written by "
                                "`effv2birds export RUN_DIR --format hub` or a run directory")
    section = json.loads((folder / "config.json").read_text()).get("effv2birds")
    if not isinstance(section, dict) or "model_kwargs" not in section:
        raise ConfigError(f"{folder}/config.json has no 'effv2birds' section (model settings, label names), so it was "
                         f"not written by effv2birds export; a plain timm folder loads with "
                         f"timm.create_model('local-dir:{folder}', pretrained=True)")
    model = build_model(**saved_model_kwargs(section["model_kwargs"]), pretrained=False)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device="cpu"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model, section["class_names"], Preprocessing.from_meta(section), device=device, meta=section)


def check_hub_reachable() -> str:
    """The Hub endpoint (``HF_ENDPOINT`` or huggingface.co) when it answers within a few seconds, else
    ExportError: offline mode or no network fails at once, not after the client's retries.

    >>> import os; os.environ["HF_HUB_OFFLINE"] = "1"
    >>> check_hub_reachable()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    effv2birds.export.errors.ExportError: cannot push to the Hugging Face Hub: offline mode ...
    >>> del os.environ["HF_HUB_OFFLINE"]
    """
    from effv2birds.models.weights import _offline, _unreachable

    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    offline = "offline mode (HF_HUB_OFFLINE or EFFV2BIRDS_OFFLINE) is set"
    reason = offline if _offline(hf=True) else _unreachable(endpoint)
    if reason is not None:
        raise ExportError(f"cannot push to the Hugging Face Hub: {reason} ({endpoint}). Export without --push-to-hub "
                          "now and push the folder later from a machine with network (`hf upload REPO_ID FOLDER`)")
    return endpoint


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
    """Upload a hub folder: ``HfApi().create_repo(exist_ok=True)`` then ``upload_folder``. Returns the repo URL.

    >>> push_to_hub("runs/demo-hub", "me/birds32")  # doctest: +SKIP
    'https://huggingface.co/me/birds32'
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ExportError(f"--push-to-hub {repo_id!r} is not a Hub repository id ({exc}); use 'user/name'") from exc
    endpoint = check_hub_reachable()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          commit_message=f"effv2birds export of {folder.name}")
    except (HfHubHTTPError, LocalTokenNotFoundError, OSError) as exc:
        raise ExportError(f"pushing {folder} to {repo_id} failed ({type(exc).__name__}: {str(exc)[:300]}); log in with "
                          "`hf auth login` or set HF_TOKEN, and check that you may write to that repository. "
                          f"The folder is complete at {folder}") from exc
    return str(url)
