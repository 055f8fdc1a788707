"""The one source of configuration: frozen, validated dataclasses and the one precedence rule.

Precedence, lowest to highest: field defaults < a preset (``effv2birds.presets``) < that preset's
values for the run's photo size (``presets.PHOTO_SIZE_RECIPES``: ``ours`` at ``photo_size = 32``) < a
TOML/JSON config file (only the keys it sets) < flags, ``--set`` and keyword overrides. Every entry point
(``effv2birds train``, ``examples/reproduce.py``, ``TrainConfig.from_file``) goes through
:func:`resolve_config`. Every run saves the resolved config (``config.json`` and ``config.toml``)
in its run directory, so ``TrainConfig.from_file(run_dir / "config.toml")`` rebuilds it exactly.

>>> from effv2birds import TrainConfig
>>> cfg = TrainConfig(data="synthetic", image_size=32, epochs=2)
>>> cfg.replace(epochs=3).epochs
3
>>> resolve_config(preset="ours", overrides={"epochs": 5}).epochs
5
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from effv2birds.atomic import atomic_write_text
from effv2birds.errors import ConfigError, check_number
from effv2birds.model_ids import DEFAULT_MODEL, parse_model_id
from effv2birds.run_files import CONFIG_JSON, CONFIG_TOML

__all__ = ["ConfigError", "ProgressiveConfig", "TrainConfig", "PROGRESSIVE_PRESETS", "parse_value", "read_config_file",
           "field_type", "resolve_config", "resolve_values", "config_layers", "photo_size_layer", "merge_layers"]


def _bad(cls: type, name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{cls.__name__}.{name}={value!r} is not valid: {allowed}")


def _check_literals(obj: Any) -> None:
    """Validate every ``Literal[...]`` field against its allowed values."""
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        hint = hints[f.name]
        options = [a for a in get_args(hint)] if get_origin(hint) is Literal else None
        if options is None:
            # Optional[Literal[...]] written as "Literal[...] | None"
            for arg in get_args(hint):
                if get_origin(arg) is Literal:
                    options = list(get_args(arg)) + [None]
        if options is not None and getattr(obj, f.name) not in options:
            allowed = ", ".join(repr(o) for o in options)
            raise _bad(type(obj), f.name, getattr(obj, f.name), f"choose one of {allowed}")


def _positive(obj: Any, *names: str, allow_none: bool = False, allow_zero: bool = False) -> None:
    for name in names:
        check_number(f"{type(obj).__name__}.{name}", getattr(obj, name), low=0.0, low_ok=allow_zero,
                     allow_none=allow_none)


def _fraction(obj: Any, *names: str, top: float = 1.0) -> None:
    for name in names:
        check_number(f"{type(obj).__name__}.{name}", getattr(obj, name), low=0.0, high=top, low_ok=True)


def _coerce(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown keys with a helpful list; turn TOML lists into tuples."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} option(s) {', '.join(unknown)}; known options: {', '.join(sorted(known))}"
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


# The paper's Table 6 (EfficientNetV2-S on ImageNet) and a low-resolution preset for this study's
# 32-128 px photos. ``None`` in a preset means "keep the TrainConfig value".
PROGRESSIVE_PRESETS: dict[str, dict[str, Any]] = {
    "paper-s": dict(
        stages=4, size_start=128, size_end=300, randaug_start=5, randaug_end=15,
        mixup_start=0.0, mixup_end=0.0, dropout_start=0.1, dropout_end=0.3, eval_size=384,
    ),
    "low-res": dict(
        stages=4, size_start=32, size_end=128, randaug_start=5, randaug_end=15,
        mixup_start=0.0, mixup_end=0.0, dropout_start=0.1, dropout_end=0.3, eval_size=128,
    ),
}


@dataclass(frozen=True)
class ProgressiveConfig:
    """Progressive learning (EfficientNetV2, Sec. 4): image size and regularization grow together.

    Training is cut into ``stages`` of equal length; in stage ``i`` of ``M`` each value is
    ``start + (end - start) * i / (M - 1)``. ``stages=0`` turns progressive learning off.

    >>> ProgressiveConfig.from_preset("paper-s").size_end
    300
    """

    stages: int = 0
    size_start: int = 128
    size_end: int = 300
    randaug_start: float = 5.0
    randaug_end: float = 15.0
    mixup_start: float = 0.0
    mixup_end: float = 0.0
    dropout_start: float = 0.1
    dropout_end: float = 0.3
    stochastic_depth_start: float | None = None
    stochastic_depth_end: float | None = None
    eval_size: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.stages, int) or self.stages < 0 or self.stages == 1:
            raise _bad(type(self), "stages", self.stages, "0 (off) or an integer >= 2")
        _positive(self, "size_start", "size_end")
        _positive(self, "eval_size", allow_none=True)
        _positive(self, "randaug_start", "randaug_end", "mixup_start", "mixup_end", allow_zero=True)
        _fraction(self, "dropout_start", "dropout_end")
        if (self.stochastic_depth_start is None) != (self.stochastic_depth_end is None):
            raise ConfigError(
                "ProgressiveConfig.stochastic_depth_start and stochastic_depth_end must be given together "
                f"(got {self.stochastic_depth_start!r} and {self.stochastic_depth_end!r})"
            )
        if self.stochastic_depth_start is not None:
            _fraction(self, "stochastic_depth_start", "stochastic_depth_end")

    @property
    def enabled(self) -> bool:
        return self.stages >= 2

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ProgressiveConfig":
        if name not in PROGRESSIVE_PRESETS:
            raise ConfigError(
                f"progressive preset {name!r} is unknown; choose one of {', '.join(PROGRESSIVE_PRESETS)}"
            )
        return cls(**{**PROGRESSIVE_PRESETS[name], **overrides})


Optimizer = Literal["adamw", "adam", "sgd", "rmsprop"]
Schedule = Literal["cosine", "step", "plateau", "constant"]
# the trackers accelerate supports (accelerate.utils.LoggerType without "all"), plus "auto" (TensorBoard
# when it is installed, else none) and "none"; each needs its own package (training.setup.TRACKER_PACKAGES)
Tracker = Literal["auto", "none", "tensorboard", "trackio", "mlflow", "wandb", "aim", "comet_ml", "clearml",
                  "dvclive", "swanlab"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. Field groups: data, augmentation, model, optimisation,
    stopping, devices, records.

    >>> TrainConfig(image_size=0)
    Traceback (most recent call last):
    ...
    effv2birds.errors.ConfigError: TrainConfig.image_size=0 is not valid: a number > 0
    """

    # --- data --------------------------------------------------------------------------------
    data: str = "synthetic"  # folder, hub id, "synthetic" (a saved DatasetDict dir also works)
    image_column: str | None = None
    label_column: str | None = None
    per_class: int | None = None  # keep N training photos per class (the study: 100)
    max_samples: int | None = None  # cap every split, for quick runs
    val_fraction: float = 0.1  # carved from train, stratified, when the source has no validation split
    test_fraction: float = 0.1  # carved from train when the source has no test split
    synthetic_size: int = 2000  # images in the built-in synthetic train split
    image_size: int = 32  # training resolution (pixels, square)
    eval_image_size: int | None = None  # None: same as image_size
    photo_size: int | None = None  # make every photo this size first (the study: 32), then resize it to image_size
    resize: Literal["resize", "resize_crop"] = "resize"  # study: plain resize
    normalize: bool = True  # study: False (only scaled to [0,1])
    cache_dir: str | None = None  # None: the datasets cache
    num_proc: int | None = None  # processes for the one-time cache build
    data_on_device: Literal["auto", "yes", "no"] = "auto"  # keep the cached train set on the GPU

    # --- augmentation (batch-wise on uint8, on the training device) -------------------------
    random_crop: Literal["none", "pad", "resized"] = "pad"
    crop_padding: int = 4  # pixels, for random_crop="pad" (scaled with image size / 32)
    crop_scale_min: float = 0.35  # for random_crop="resized"
    hflip: bool = True
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none"
    randaug_magnitude: float = 9.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.1
    loss: Literal["cross_entropy", "cosine"] = "cross_entropy"  # cosine: Barz & Denzler's small-data loss

    # --- model -------------------------------------------------------------------------------
    model: str = DEFAULT_MODEL  # one id: torchvision/efficientnet_v2_s, timm/tf_efficientnetv2_s[.tag], ...
    backend: InitVar[str | None] = None  # deprecated: the model id names it (read config.backend)
    variant: str = "default"
    pretrained: bool = False
    weights: str | None = None  # a local weights file; implies pretrained
    dropout: float | None = None  # classifier dropout; None: the model's default (0.2)
    stochastic_depth: float | None = None  # drop-path rate; None: the model's default (0.2)
    bn_momentum: float | None = None  # BatchNorm running-stat momentum (PyTorch's; TF's 0.99 = 0.01); None: 0.1
    width_multiplier: float = 1.0
    depth_multiplier: float = 1.0
    freeze_backbone: bool = False  # linear probe: train only the classifier head
    zero_init_residual: bool = True  # residual blocks start as identity (study/torchvision default: False)

    # --- optimisation ------------------------------------------------------------------------
    optimizer: Optimizer = "adamw"
    lr: float = 2e-3
    lr_scaling: Literal["none", "linear"] = "none"  # "linear": lr is per 256 images, x global_batch/256
    weight_decay: float = 0.05  # never applied to norm and bias parameters
    momentum: float = 0.9  # sgd, rmsprop
    nesterov: bool = True  # sgd
    schedule: Schedule = "cosine"
    warmup_epochs: float = 2.0
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    step_epochs: int = 30  # schedule="step": multiply lr by step_gamma every step_epochs
    step_gamma: float = 0.1
    plateau_patience: int = 10  # schedule="plateau": epochs without val improvement
    plateau_factor: float = 0.1
    batch_size: int = 128  # per process
    eval_batch_size: int | None = None  # validation/test batch per process; None: 2 x batch_size (no gradients kept)
    grad_accum_steps: int = 1
    grad_clip: float | None = None  # max global grad norm
    ema_decay: float | None = None  # e.g. 0.999: evaluate an EMA of the weights
    ema_bn_images: int = 1024  # train photos the EMA's BatchNorm statistics are measured on before each evaluation; 0: copy the model's

    # --- stopping (the study: epochs=350, min_epochs=150, early_stop_patience=50) -------------
    epochs: int = 30
    min_epochs: int = 0
    early_stop_patience: int | None = None
    max_steps: int | None = None  # stop after this many optimizer steps (quick runs, tests)

    # --- devices -----------------------------------------------------------------------------
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16 on a bf16 GPU, else no
    cpu: bool = False  # force CPU (and a gloo group under `accelerate launch`)
    channels_last: bool | None = None  # None: on for CUDA and CPU (faster convolutions there), off elsewhere
    compile: bool = False
    sync_bn: bool = False
    max_nonfinite_steps: int = 5  # stop after this many non-finite losses in a row
    seed: int = 0

    # --- records -----------------------------------------------------------------------------
    output_dir: str = "runs/default"
    eval_every_epochs: int = 1
    checkpoint_every_epochs: int | None = 1
    checkpoint_every_steps: int | None = None
    keep_last: int = 2
    resume: str | None = None  # a checkpoint dir, or "latest"
    log_with: Tracker = "auto"  # an accelerate tracker; its package is checked before any data is loaded
    log_every_steps: int = 10
    progress_bar: bool = True

    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)

    def __post_init__(self, backend: str | None = None) -> None:
        if isinstance(self.progressive, dict):
            object.__setattr__(self, "progressive", ProgressiveConfig(**_coerce(ProgressiveConfig, self.progressive)))
        _check_literals(self)
        model = self.model
        if backend is not None and model == DEFAULT_MODEL:
            model = "efficientnet_v2_s"  # backend= alone was the old way to pick that backend's V2-S
        object.__setattr__(self, "model", parse_model_id(model, backend).id)  # names the choices
        if not isinstance(self.data, str) or not self.data:
            raise _bad(type(self), "data", self.data, "a folder path, a hub data set id or 'synthetic'")
        _positive(self, "image_size", "synthetic_size", "batch_size", "grad_accum_steps", "epochs",
                  "eval_every_epochs", "keep_last", "log_every_steps", "max_nonfinite_steps", "lr")
        _positive(self, "eval_image_size", "photo_size", "per_class", "max_samples", "num_proc", "grad_clip",
                  "early_stop_patience", "max_steps", "checkpoint_every_epochs", "checkpoint_every_steps",
                  "eval_batch_size", allow_none=True)
        _positive(self, "weight_decay", "warmup_epochs", "crop_padding", "randaug_magnitude", "mixup_alpha",
                  "cutmix_alpha", "min_epochs", "momentum", "step_gamma", "plateau_factor", allow_zero=True)
        _positive(self, "width_multiplier", "depth_multiplier", "step_epochs", "plateau_patience")
        _fraction(self, "val_fraction", "test_fraction", "label_smoothing", "min_lr_ratio")
        _fraction(self, "crop_scale_min", top=1.0 + 1e-9)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"TrainConfig.val_fraction + test_fraction = {self.val_fraction + self.test_fraction} "
                "must be < 1 so that training data remains"
            )
        for name in ("dropout", "stochastic_depth"):
            if getattr(self, name) is not None:
                _fraction(self, name)
        check_number("TrainConfig.bn_momentum", self.bn_momentum, low=0.0, high=1.0, allow_none=True)
        check_number("TrainConfig.ema_bn_images", self.ema_bn_images, low=0, low_ok=True, integer=True)
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise _bad(type(self), "ema_decay", self.ema_decay, "a number in (0, 1), e.g. 0.999, or None")
        if self.ema_decay is None and self.ema_bn_images != type(self).ema_bn_images:
            raise ConfigError(  # else a value the user chose would be silently unused
                f"TrainConfig.ema_bn_images={self.ema_bn_images} has no effect without ema_decay: set ema_decay "
                f"(e.g. --ema-decay 0.999) or leave ema_bn_images at its default {type(self).ema_bn_images}"
            )
        if self.min_epochs > self.epochs:
            raise ConfigError(
                f"TrainConfig.min_epochs={self.min_epochs} is larger than epochs={self.epochs}; "
                "min_epochs must be <= epochs"
            )
        if self.freeze_backbone and not (self.pretrained or self.weights):
            raise ConfigError(
                "TrainConfig.freeze_backbone=True needs pretrained=True or weights=FILE: "
                "a linear probe on a random backbone learns nothing useful"
            )
        if self.mixed_precision == "fp16" and self.cpu:
            raise ConfigError("TrainConfig.mixed_precision='fp16' needs a GPU; on CPU use 'bf16' or 'no'")

    # --- derived values ------------------------------------------------------------------------
    @property
    def eval_size(self) -> int:
        """Resolution for validation/test: eval_image_size, else the progressive eval size, else image_size."""
        if self.eval_image_size is not None:
            return self.eval_image_size
        if self.progressive.enabled and self.progressive.eval_size is not None:
            return self.progressive.eval_size
        return self.image_size

    @property
    def eval_batch(self) -> int:
        """Validation/test batch per process: eval_batch_size, else twice batch_size.

        >>> TrainConfig(batch_size=12).eval_batch, TrainConfig(batch_size=12, eval_batch_size=50).eval_batch
        (24, 50)
        """
        return self.eval_batch_size if self.eval_batch_size is not None else 2 * self.batch_size

    # --- conversion ----------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        # backend=None: the model id names the backend (dataclasses.replace would pass the old one on)
        return dataclasses.replace(self, **{"backend": None, **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """TOML text that ``from_file`` reads back to an equal config (None values are omitted)."""
        flat = {k: v for k, v in self.to_dict().items() if k != "progressive"}
        lines = [f"{k} = {_toml_value(v)}" for k, v in flat.items() if v is not None]
        prog = {k: v for k, v in self.to_dict()["progressive"].items() if v is not None}
        lines += ["", "[progressive]"] + [f"{k} = {_toml_value(v)}" for k, v in prog.items()]
        return "\n".join(lines) + "\n"

    def save(self, directory: str | Path) -> None:
        """Write config.json and config.toml into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_text(directory / CONFIG_JSON, json.dumps(self.to_dict(), indent=2) + "\n")
        atomic_write_text(directory / CONFIG_TOML, self.to_toml())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """A config from a dict such as ``to_dict()`` gives; ``progressive`` may be a preset name or a
        dict with a ``preset`` key and single values."""
        data = dict(data)
        prog = data.pop("progressive", None)
        backend = data.pop("backend", None)  # configs saved before the model id named the backend
        kwargs = _coerce(cls, data)
        if prog is not None:
            kwargs["progressive"] = ProgressiveConfig(**_coerce(ProgressiveConfig, _progressive_values({}, prog)))
        return cls(**kwargs, backend=backend)

    @classmethod
    def from_saved(cls, saved: str | Path | dict[str, Any]) -> "TrainConfig":
        """The config a run saved (its folder, its ``config.json``/``config.toml``, or their values) as this version
        reads it, so that an older run still evaluates, compares and resumes: a value an older version accepted
        without effect and this one refuses is dropped (``ema_bn_images`` without ``ema_decay``).

        >>> TrainConfig.from_saved({"ema_decay": None, "ema_bn_images": 256}).ema_bn_images
        1024
        """
        if not isinstance(saved, dict) and Path(saved).is_dir():
            saved = Path(saved) / CONFIG_JSON  # a run folder: the file every run writes
        values = dict(saved) if isinstance(saved, dict) else read_config_file(saved)
        if values.get("ema_decay") is None:
            values.pop("ema_bn_images", None)  # had no effect without an EMA; only new configs are refused
        return cls.from_dict(values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read a TOML (or JSON) config; keyword overrides win over the file (:func:`resolve_config`).

        A ``[progressive]`` table may name ``preset = "paper-s"`` and override single values.
        """
        return resolve_config(config_file=path, overrides=overrides)


# The backend is part of the model id; ``config.backend`` reads it (the old field is an InitVar now).
TrainConfig.backend = property(lambda self: parse_model_id(self.model).backend,  # type: ignore[assignment]
                               doc="The model id's backend: 'torchvision' or 'timm' (read-only).")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The values a TOML or JSON config file sets (nothing else), or a ConfigError naming the file.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.toml"; _ = f.write_text("epochs = 5")
    >>> read_config_file(f)
    {'epochs': 5}
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of a .toml or .json file")
    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} could not be parsed: {exc}") from exc


def _progressive_values(base: dict[str, Any], layer: Any) -> dict[str, Any]:
    """``base`` progressive values with a layer on top: a preset name starts again from that preset,
    a dict updates single values (after its own ``preset``, if it names one)."""
    if isinstance(layer, ProgressiveConfig):
        return dataclasses.asdict(layer)
    if isinstance(layer, str):
        layer = {"preset": layer}
    if not isinstance(layer, dict):
        raise ConfigError(f"progressive={layer!r} is not valid: a preset name ({', '.join(PROGRESSIVE_PRESETS)}) "
                          "or a table of ProgressiveConfig values")
    layer = dict(layer)
    preset = layer.pop("preset", None)
    if preset is not None:
        if preset not in PROGRESSIVE_PRESETS:
            raise ConfigError(f"progressive preset {preset!r} is unknown; choose one of {', '.join(PROGRESSIVE_PRESETS)}")
        base = dict(PROGRESSIVE_PRESETS[preset])
    return {**base, **layer}


def config_layers(*, preset: str | None = None, config_file: str | Path | None = None,
                  overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(the preset's values, [the config file's values, the overrides])``: the layers of
    :func:`resolve_values` below and above the photo-size layer, the file read once.

    >>> preset_layer, user_layers = config_layers(preset="blog", overrides={"epochs": 5})
    >>> preset_layer["lr"], user_layers
    (0.0001, [{}, {'epochs': 5}])
    """
    from effv2birds.presets import PRESETS

    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[preset]) if preset else {}, [read_config_file(config_file) if config_file else {},
                                                       dict(overrides or {})]


def photo_size_layer(preset: str | None, photo_size: Any) -> dict[str, Any]:
    """The preset's values for photos of ``photo_size`` px (:data:`~effv2birds.presets.PHOTO_SIZE_RECIPES`),
    ``{}`` where it has none.

    >>> photo_size_layer("ours", 32), photo_size_layer("blog", 32)
    ({'image_size': 64, 'epochs': 32}, {})
    """
    from effv2birds.presets import PHOTO_SIZE_RECIPES

    by_size = PHOTO_SIZE_RECIPES.get(preset or "", {})
    return dict(by_size.get(photo_size, {})) if isinstance(photo_size, int) else {}


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Layers of TrainConfig values merged, lowest first: a higher layer's value replaces a lower one's,
    except ``progressive``, which a higher layer updates (or restarts from a named preset).

    >>> merge_layers({"epochs": 40, "lr": 1e-3}, {"epochs": 32})
    {'epochs': 32, 'lr': 0.001}
    """
    values: dict[str, Any] = {}
    for layer in layers:
        layer = dict(layer)
        if "progressive" in layer:
            values["progressive"] = _progressive_values(values.get("progressive", {}), layer.pop("progressive"))
        values.update(layer)
    return values


def resolve_values(*, preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The merged TrainConfig values of every layer, lowest first: ``preset`` < the preset's values for
    the photo size the merged layers set (:func:`photo_size_layer`) < ``config_file`` (only the keys it
    sets) < ``overrides`` (a ``None`` there unsets an optional field).
    Not validated yet: :func:`resolve_config` builds the TrainConfig.

    >>> resolve_values(preset="blog", overrides={"epochs": 5})["lr"]
    0.0001
    >>> ours32 = resolve_values(preset="ours", overrides={"photo_size": 32})
    >>> ours32["image_size"], ours32["epochs"]
    (64, 32)
    """
    preset_layer, user_layers = config_layers(preset=preset, config_file=config_file, overrides=overrides)
    # the photo size may come from any layer (the highest that sets it), so its values slot in below the user's
    size = next((layer["photo_size"] for layer in reversed([preset_layer, *user_layers]) if "photo_size" in layer),
                None)
    return merge_layers(preset_layer, photo_size_layer(preset, size), *user_layers)


def resolve_config(*, preset: str | None = None, config_file: str | Path | None = None,
                   overrides: dict[str, Any] | None = None) -> "TrainConfig":
    """The TrainConfig of defaults < ``preset`` (with its values for the photo size, if it has any) <
    ``config_file`` < ``overrides``: the one precedence rule of every entry point.

    >>> cfg = resolve_config(preset="ours", overrides={"image_size": 64})
    >>> cfg.optimizer, cfg.image_size
    ('adamw', 64)
    """
    return TrainConfig.from_dict(resolve_values(preset=preset, config_file=config_file, overrides=overrides))


def parse_value(name: str, text: str, cls: type | None = None) -> Any:
    """Text from the command line (a flag or ``--set name=text``) as the type of field ``name``;
    ``none`` unsets an optional field. Raises ConfigError naming the field and what it takes.

    >>> parse_value("epochs", "5"), parse_value("hflip", "no"), parse_value("max_steps", "none")
    (5, False, None)
    """
    cls = cls or TrainConfig
    hints = get_type_hints(cls)
    if name not in hints or name == "progressive":
        known = ", ".join(sorted(f.name for f in fields(cls) if f.name != "progressive"))
        raise ConfigError(f"unknown {cls.__name__} option {name!r}; known options: {known}")
    base, optional = field_type(hints[name])
    if optional and text.lower() in ("none", "null"):
        return None
    if get_origin(base) is Literal:
        for choice in get_args(base):
            if text == str(choice):
                return choice
        raise ConfigError(f"{name}={text!r} is not valid: choose one of {', '.join(map(str, get_args(base)))}")
    if base is bool:
        if text.lower() in ("true", "yes", "1", "on"):
            return True
        if text.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{name}={text!r} is not valid: use true or false")
    try:
        return base(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not valid: not a {base.__name__}") from None


def field_type(hint: Any) -> tuple[Any, bool]:
    """(base type or Literal, optional?) of a dataclass field annotation.

    >>> field_type(int | None)
    (<class 'int'>, True)
    """
    args = get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        return [a for a in args if a is not type(None)][0], True
    return hint, False


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))
