"""Run preparation for ``train``: run-directory checks, the checks made before any data is touched,
data loading and placement, linear-probe freezing, trackers. Kept apart so that ``trainer.py``
shows the training loop itself.

>>> from effv2birds.training.setup import RESUMABLE_CHANGES
>>> "lr" in RESUMABLE_CHANGES
False
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from effv2birds.config import ConfigError, TrainConfig
from effv2birds.run_files import CHECKPOINTS, CONFIG_JSON, SUMMARY
from effv2birds.training.checkpoint import list_checkpoints, resolve_resume

__all__ = ["RESUMABLE_CHANGES", "TRACKER_PACKAGES", "check_before_data", "check_launched_processes", "check_model",
           "check_output_dir",
           "check_run_dir", "cpu_bf16_warning", "data_device", "default_channels_last", "finish_trackers", "freeze_backbone",
           "load_config_dataset", "load_data",
           "reset_accelerator_state", "resolve_mixed_precision", "set_train_mode", "tracker_init", "tracker_name"]


# tracker -> the pip command that installs its package (accelerate's is_<name>_available checks for it)
TRACKER_PACKAGES: dict[str, str] = {
    "tensorboard": "pip install 'effv2birds[tensorboard]'",
    "trackio": "pip install 'effv2birds[trackio]'",
    "mlflow": "pip install 'effv2birds[mlflow]' (the client, mlflow-skinny; or pip install mlflow)",
    "wandb": "pip install wandb",
    "aim": "pip install 'aim<4'",
    "comet_ml": "pip install comet_ml",
    "clearml": "pip install clearml",
    "dvclive": "pip install dvclive",
    "swanlab": "pip install swanlab",
}


def _tracker_available(name: str) -> bool | None:
    """accelerate's own check (``accelerate.utils.is_<name>_available``); None: this accelerate lacks the tracker."""
    import accelerate.utils

    check = getattr(accelerate.utils, f"is_{name}_available", None)
    return None if check is None else bool(check())


def tracker_name(config: TrainConfig) -> str | None:
    """The accelerate tracker for ``config.log_with`` ("auto": TensorBoard when it is installed, else none).

    Raises ConfigError with the pip command when the tracker's package is missing: accelerate itself
    would drop the tracker silently and the run would log nowhere.

    >>> from effv2birds import TrainConfig
    >>> tracker_name(TrainConfig(log_with="none")) is None
    True
    """
    if config.log_with == "none":
        return None
    if config.log_with == "auto":
        return "tensorboard" if _tracker_available("tensorboard") else None
    available = _tracker_available(config.log_with)
    if available is None:
        import accelerate

        raise ConfigError(
            f"TrainConfig.log_with={config.log_with!r}: accelerate {accelerate.__version__} has no such tracker; "
            "upgrade it (pip install -U accelerate) or choose another log_with"
        )
    if not available:
        raise ConfigError(
            f"TrainConfig.log_with={config.log_with!r} needs the {config.log_with} package, which is not installed: "
            f"{TRACKER_PACKAGES[config.log_with]}; or choose log_with='none' (nothing was loaded or written)"
        )
    return config.log_with


def tracker_init(tracker: str, run_dir: Path) -> tuple[str, dict[str, Any]]:
    """``(project_name, init_kwargs)`` for ``accelerator.init_trackers``: TensorBoard writes into
    ``RUN_DIR/tensorboard`` as before; the others log to project ``effv2birds`` (their own environment
    variables, e.g. ``MLFLOW_EXPERIMENT_NAME``, still win) under the run directory's name.

    >>> tracker_init("mlflow", Path("runs/birds32"))
    ('effv2birds', {'mlflow': {'run_name': 'birds32'}})
    """
    if tracker == "tensorboard":
        return "tensorboard", {}
    name = run_dir.name
    kwargs = {"trackio": {"name": name}, "mlflow": {"run_name": name}, "wandb": {"name": name, "dir": str(run_dir)},
              "dvclive": {"dir": str(run_dir / "dvclive")}, "swanlab": {"experiment_name": name}}
    return "effv2birds", {tracker: kwargs[tracker]} if tracker in kwargs else {}


def check_output_dir(run_dir: Path) -> None:
    """Refuse an ``output_dir`` that cannot be created or written, before any work is done.

    >>> check_output_dir(Path("/dev/null/run"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    effv2birds.errors.ConfigError: output_dir '/dev/null/run' cannot be created: /dev/null is a file, not a folder; ...
    """
    existing = run_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output_dir {str(run_dir)!r} cannot be created: {existing} is a file, not a folder; "
                          "choose another output_dir")
    if not os.access(existing, os.W_OK | os.X_OK):  # also catches read-only file systems (EROFS), even for root
        verb = "written" if existing == run_dir.absolute() else "created"
        raise ConfigError(f"output_dir {str(run_dir)!r} cannot be {verb}: {existing} is not writable "
                          "(permissions or a read-only file system); choose another output_dir")


def check_model(config: TrainConfig) -> None:
    """Build the configured model on the meta device (no memory, no random numbers): a backend/variant
    that cannot be built, bad multipliers or rates, a missing weights file or one of another
    architecture all fail here, before any photo is decoded (an unknown model id already fails in
    TrainConfig). The number of classes is not known yet; a head of another size is never an error
    (it is replaced), so 2 stands in for it.

    >>> from effv2birds import TrainConfig
    >>> check_model(TrainConfig(model="timm/efficientnetv2_rw_s", variant="half_layers"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    effv2birds.errors.ModelConfigError: variant='half_layers' is defined on EfficientNetV2-S's stage table; ...
    """
    import warnings

    from effv2birds.models import build_model

    with torch.device("meta"), warnings.catch_warnings():
        # loading a weights file into meta tensors is a deliberate no-op: only names and shapes are checked
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter.*")
        build_model(config.model, num_classes=2, pretrained=config.pretrained,
                    weights=config.weights, variant=config.variant, dropout=config.dropout,
                    stochastic_depth=config.stochastic_depth, bn_momentum=config.bn_momentum,
                    width_multiplier=config.width_multiplier, depth_multiplier=config.depth_multiplier,
                    zero_init_residual=config.zero_init_residual)


def check_before_data(config: TrainConfig, run_dir: Path) -> tuple[str | None, Path | None]:
    """Everything that can be checked without the data, checked before any photo is decoded or cached:
    the output directory, the tracker's package, the model and its weights file, the checkpoint to
    resume from. Returns ``(tracker, resume_from)``: the tracker (``tracker_name``) and the checkpoint
    folder to resume from (``resolve_resume``; ``None``: start afresh). Resolve it here only, once: it
    warns about every corrupt checkpoint it passes over.

    >>> import tempfile
    >>> from effv2birds import TrainConfig
    >>> cfg = TrainConfig(log_with="none", width_multiplier=0.25, depth_multiplier=0.1, resume="latest")
    >>> check_before_data(cfg, Path(tempfile.mkdtemp()) / "run")  # no tracker, no checkpoint yet
    (None, None)
    """
    check_output_dir(run_dir)
    tracker = tracker_name(config)
    check_model(config)
    resume_from = None
    if config.resume is not None:
        resume_from = resolve_resume(config.resume, run_dir)  # a named checkpoint that does not exist fails here
    return tracker, resume_from


def check_launched_processes(accelerator: Any) -> None:
    """Refuse a launch whose processes accelerate does not join into one group.

    e.g. ``torchrun --nproc_per_node 2`` on a machine without GPUs and without ``--cpu``: each process
    would run alone, N independent runs writing into one output directory or counting photos N times.

    >>> from accelerate import Accelerator
    >>> check_launched_processes(Accelerator(cpu=True))  # one process, as launched: nothing to say
    """
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched != accelerator.num_processes:
        raise ConfigError(
            f"{launched} processes were launched but accelerate runs {accelerator.num_processes} "
            f"({accelerator.distributed_type}); without GPUs pass --cpu (cpu=True) for a gloo process group"
        )


def reset_accelerator_state() -> None:
    """Forget the settings of an earlier ``Accelerator`` in this process, but keep its process group.

    accelerate keeps precision and gradient accumulation in process-wide singletons, so a second run
    in one process (a study, the tests, ``evaluate_run`` after ``train``) would get the first one's.
    The only use of accelerate's private ``_reset_state``: call this before each ``Accelerator(...)``.

    >>> from accelerate import Accelerator
    >>> reset_accelerator_state()
    >>> Accelerator(cpu=True, gradient_accumulation_steps=3).gradient_accumulation_steps
    3
    >>> reset_accelerator_state()
    >>> Accelerator(cpu=True).gradient_accumulation_steps
    1
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def load_config_dataset(config: TrainConfig, *,
                        cache_dir: str | os.PathLike | None = None) -> tuple[Any, dict[str, Any]]:
    """The data ``config`` names, loaded with its data options: ``(DatasetDict, data report)``.

    The one place that turns a config into ``load_image_dataset`` arguments, so that training and
    ``evaluate``'s leak check (which rebuilds a run's training split from its ``config.json``) get
    the same photos. ``cache_dir`` overrides ``config.cache_dir`` (where check results are remembered).

    >>> from effv2birds import TrainConfig
    >>> ds, report = load_config_dataset(TrainConfig(synthetic_size=40, max_samples=40))
    >>> ds["train"].num_rows, report["kind"]
    (40, 'synthetic')
    """
    from effv2birds import data as data_mod

    return data_mod.load_image_dataset(
        config.data, image_column=config.image_column, label_column=config.label_column,
        per_class=config.per_class, max_samples=config.max_samples, val_fraction=config.val_fraction,
        test_fraction=config.test_fraction, seed=config.seed, synthetic_size=config.synthetic_size,
        num_proc=config.num_proc, cache_dir=cache_dir or config.cache_dir, with_report=True,
    )


def load_data(config: TrainConfig, accelerator: Any,
              train_sizes: Sequence[int]) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Load and cache the splits: ``train`` once per size in ``train_sizes``, the others at ``config.eval_size``.

    Returns ``(splits, class_names, data_report)`` where ``splits["train"]`` maps each size to its
    ``CachedSplit`` (progressive learning trains each stage on its own pre-resized cache, resized by
    PIL exactly like a fixed-size run at that size); the main process builds the caches first.

    >>> import tempfile
    >>> from accelerate import Accelerator
    >>> from effv2birds import TrainConfig
    >>> cfg = TrainConfig(synthetic_size=40, max_samples=40, cache_dir=tempfile.mkdtemp())
    >>> splits, names, report = load_data(cfg, Accelerator(cpu=True), [16, 32])
    >>> sorted(splits), sorted(splits["train"]), len(names) == len(report["class_names"])
    (['test', 'train', 'validation'], [16, 32], True)
    """
    from effv2birds import data as data_mod

    with accelerator.main_process_first():  # the first process builds the caches, the others reuse them
        ds, data_report = load_config_dataset(config)
        splits: dict[str, Any] = {}

        def cache(name: str, size: int) -> Any:
            return data_mod.cache_split(ds[name], size, resize=config.resize, cache_dir=config.cache_dir,
                                        num_proc=config.num_proc, photo_size=config.photo_size, name=name)

        if "train" in ds and len(ds["train"]) > 0:
            splits["train"] = {size: cache("train", size) for size in sorted(set(train_sizes))}
        for name in ("validation", "test"):
            if name in ds and len(ds[name]) > 0:
                splits[name] = cache(name, config.eval_size)
    for name in ("train", "validation"):
        if name not in splits:
            raise data_mod.DataError(
                f"the data set {config.data!r} has no {name!r} images after splitting; add images, "
                "or raise val_fraction/max_samples"
            )
    train = list(splits["train"].values())
    # every stage must see the same images in the same order (a file may decode at one size only)
    if any(not torch.equal(t.labels, train[0].labels) for t in train[1:]):
        raise data_mod.DataError(
            "the train caches at sizes " + ", ".join(str(t.image_size) for t in train) + " hold different "
            "images (some file decoded at one size but not another); delete the cache entries under "
            f"{config.cache_dir or 'the default cache dir'} or remove the damaged files"
        )
    class_names = list(train[0].class_names)
    report = {**data_report, "class_names": class_names,
              "cached_splits": {name: len(train[0] if name == "train" else split) for name, split in splits.items()},
              "train_cache_sizes": [t.image_size for t in train]}
    return splits, class_names, report


def resolve_mixed_precision(config: TrainConfig) -> str:
    """``config.mixed_precision``, with ``"auto"`` resolved: fp16 or bf16 when ``accelerate launch
    --mixed_precision`` (or ``accelerate config``) asks for it, else bf16 on a GPU with native bf16
    (Ampere or newer), else fp32 ("no"). ``accelerate launch`` sets "no" when nothing was chosen, so
    "no" from there does not switch bf16 off; ``mixed_precision="no"`` in the config does.

    >>> from effv2birds import TrainConfig
    >>> resolve_mixed_precision(TrainConfig(mixed_precision="auto", cpu=True))
    'no'
    """
    if config.mixed_precision != "auto":
        return config.mixed_precision
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "").lower()
    if launched in ("fp16", "bf16") and not (config.cpu and launched == "fp16"):
        return launched
    if config.cpu or not torch.cuda.is_available():
        return "no"
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        native = torch.cuda.is_bf16_supported()
    return "bf16" if native else "no"


def cpu_bf16_warning(precision: str, device: torch.device) -> str | None:
    """A warning when bf16 autocast is asked for on an x86 CPU whose torch kernels stop at AVX2 (or none).

    Such CPUs have no bf16 instructions, so oneDNN emulates them: on a 2-core AMD EPYC (AVX2) a 128 px
    training step of EfficientNetV2-S ran 0.9 img/s in bf16 against 10.9 in fp32 (docs/performance.md).
    Only a warning: the config asked for bf16, and AVX-512 CPUs may or may not have it. ARM CPUs are left
    alone: torch reports no capability level for them that tells whether they have bf16.

    >>> cpu_bf16_warning("no", torch.device("cpu")) is None
    True
    """
    if precision != "bf16" or device.type != "cpu":
        return None
    import platform

    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i686") or capability not in ("AVX2", "DEFAULT"):
        return None
    return (f"mixed_precision='bf16' on a CPU whose torch kernels are {capability} (no bf16 instructions): "
            "bf16 autocast is emulated there and can train many times slower than fp32 (0.9 against 10.9 "
            "img/s at 128 px on a 2-core AVX2 CPU, docs/performance.md); pass --mixed-precision no "
            "(mixed_precision=\"no\") to train in fp32")


def default_channels_last(device: torch.device) -> bool:
    """NHWC by default on CUDA and CPU: cuDNN and oneDNN both prefer it (on this project's 2-core CPU
    a training step ran 1.7x faster at 32 px, docs/performance.md); other devices (MPS, ...) keep NCHW,
    which has not been measured there.

    >>> default_channels_last(torch.device("cpu")), default_channels_last(torch.device("mps"))
    (True, False)
    """
    return torch.device(device).type in ("cuda", "cpu")


def data_device(config: TrainConfig, accelerator: Any, train_splits: Sequence[Any]) -> torch.device | None:
    """Keep the cached uint8 train splits (one per progressive stage size) on the GPU when asked, or
    ("auto") when all of them together take less than a fifth of its free memory.

    >>> from accelerate import Accelerator
    >>> from effv2birds import TrainConfig
    >>> data_device(TrainConfig(data_on_device="yes"), Accelerator(cpu=True), None) is None  # CPU: nothing to move
    True
    """
    if config.data_on_device == "no" or accelerator.device.type == "cpu":
        return None
    if config.data_on_device == "yes":
        return accelerator.device
    if accelerator.device.type != "cuda":
        return None
    nbytes = sum(split.images.numel() for split in train_splits)  # uint8: one byte each
    free, _ = torch.cuda.mem_get_info(accelerator.device)
    return accelerator.device if nbytes < 0.2 * free else None


def freeze_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """Linear probe: only the classifier head trains. Returns the head.

    >>> from effv2birds.models import build_model
    >>> model = build_model(num_classes=3, width_multiplier=0.25, depth_multiplier=0.1)
    >>> head = freeze_backbone(model)
    >>> sum(p.requires_grad for p in model.parameters()) == len(list(head.parameters()))
    True
    """
    from effv2birds.models import get_classifier

    head = get_classifier(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    return head


def set_train_mode(model: torch.nn.Module, head: torch.nn.Module | None) -> None:
    """``model.train()``, or for a linear probe (``head`` given) train mode for the head only.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2))
    >>> set_train_mode(model, model[1]); model[0].training, model[1].training
    (False, True)
    """
    model.train()
    if head is not None:  # a frozen backbone keeps its BatchNorm statistics and no dropout
        model.eval()
        head.train()


def finish_trackers(accelerator: Any) -> None:
    """Close the tracker files and wait for every process.

    >>> from accelerate import Accelerator
    >>> finish_trackers(Accelerator(cpu=True))
    """
    # not accelerator.end_training(): that also destroys the process group, which the caller
    # (a study running several trainings under one `accelerate launch`) may still need
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.wait_for_everyone()


# fields that may change when a run is resumed (they do not change what the training computes)
RESUMABLE_CHANGES = {"resume", "progress_bar", "log_with", "log_every_steps", "epochs", "min_epochs",
                     "early_stop_patience", "max_steps", "checkpoint_every_epochs", "checkpoint_every_steps",
                     "keep_last", "num_proc", "cache_dir", "eval_every_epochs", "eval_batch_size", "max_nonfinite_steps",
                     # where the run lives: runs/x, its absolute path, or the folder after a move
                     "output_dir"}


def check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to overwrite a run, and to resume one with a config that computes something else.

    >>> from effv2birds import TrainConfig
    >>> check_run_dir(Path("/nonexistent"), TrainConfig())  # a new directory: fine
    """
    checkpoints = list_checkpoints(run_dir / CHECKPOINTS)
    finished = (run_dir / SUMMARY).exists()
    if (finished or checkpoints) and config.resume is None:
        raise ConfigError(
            f"output_dir {str(run_dir)!r} already holds a run; pass resume='latest' (--resume latest) to continue "
            "it, or choose another output_dir. Nothing was overwritten."
        )
    if config.resume == "latest" and finished and not checkpoints:
        raise ConfigError(
            f"output_dir {str(run_dir)!r} holds a finished run without checkpoints, so there is nothing to resume; "
            "choose another output_dir. Nothing was overwritten."
        )
    saved = run_dir / CONFIG_JSON
    if config.resume is not None and checkpoints and saved.is_file():
        before = _saved_config(saved)
        now = json.loads(json.dumps(config.to_dict()))
        changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and before.get(k) != now[k])
        if changed:
            raise ConfigError(
                "resuming with a different config would not continue the same run; changed: "
                + ", ".join(f"{k} ({before.get(k)!r} -> {now[k]!r})" for k in changed)
                + ". Use the run's own config (--config RUN_DIR/config.toml) or another output_dir."
            )


def _saved_config(path: Path) -> dict[str, Any]:
    """A run's saved config.json in today's spelling (e.g. ``model="efficientnet_v2_s"`` +
    ``backend`` of older runs become one model id), so that an old run resumes; the raw values when
    they no longer make a config (the comparison then names what differs)."""
    import warnings

    raw = json.loads(path.read_text())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the run's own old spelling, not the user's
            return json.loads(json.dumps(TrainConfig.from_saved(raw).to_dict()))
    except ConfigError:
        return raw
