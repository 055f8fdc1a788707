"""``train(config)``: one ``accelerate`` training loop from CPU to many GPUs on many nodes.

The loop follows accelerate's examples: build an ``Accelerator``, load the data under
``main_process_first``, one ``prepare``, ``accumulate`` around every micro-batch,
``gather_for_metrics`` for exact evaluation counts, ``save_state``/``load_state`` for resume.
Start it with ``python -m effv2birds train ...`` or ``accelerate launch -m effv2birds train ...``.
``train`` is a short list of steps, as in torchvision's reference scripts: make the accelerator,
load the data, prepare model/optimizer/schedule/loaders (a ``TrainingRun``), resume, then per
epoch ``train_one_epoch`` and ``evaluate``, then finish. NaN/inf losses are the ``NonFiniteGuard``'s
business (``training/nonfinite.py``).

>>> from effv2birds import TrainConfig
>>> from effv2birds.training import train
>>> import tempfile
>>> cfg = TrainConfig(data="synthetic", synthetic_size=40, image_size=32, batch_size=8, epochs=1,
...                   width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none",
...                   output_dir=tempfile.mkdtemp() + "/run", cpu=True)
>>> result = train(cfg)                                           # doctest: +SKIP
>>> sorted(p.name for p in result.run_dir.iterdir())[:3]          # doctest: +SKIP
['README.md', 'checkpoints', 'config.json']
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effv2birds.config import ConfigError, TrainConfig
from effv2birds.run_files import CHECKPOINTS, DATA_REPORT, ENVIRONMENT, METRICS_LOG, SUMMARY, weights_file
from effv2birds.training.batchnorm import recompute_bn_statistics, sample_images
from effv2birds.training.checkpoint import checkpoint_name, load_checkpoint, prune_checkpoints, save_checkpoint
from effv2birds.training.evaluation import evaluate_model
from effv2birds.training.nonfinite import NonFiniteGuard, NonFiniteLossError
from effv2birds.training.optim import LRSchedule, build_optimizer, build_schedule
from effv2birds.training.records import (MetricsLog, environment_info, read_weights, save_weights, write_json,
                                         write_model_card)
from effv2birds.training.setup import (check_before_data, check_launched_processes, check_run_dir, cpu_bf16_warning,
                                       data_device, default_channels_last, finish_trackers, freeze_backbone, load_data,
                                       reset_accelerator_state, resolve_mixed_precision, set_train_mode, tracker_init)

__all__ = ["train", "train_one_epoch", "evaluate", "TrainingRun", "TrainResult", "NonFiniteLossError",
           "should_stop_early"]


@dataclass
class TrainResult:
    """What ``train`` returns (also saved as ``metrics.json`` in the run directory).

    ``val`` holds the validation metrics of the best epoch, ``test`` those of the best weights on
    the test split (``None`` when there is no test split): ``top1, top5, macro_f1, loss,
    per_class_accuracy, confusion_matrix, num_samples, class_names``.
    """

    run_dir: Path
    best_epoch: int
    epochs_run: int
    best_val_top1: float
    val: dict[str, Any]
    test: dict[str, Any] | None
    train_time_s: float
    images_per_s: float
    params: int
    gflops: float
    device: str
    world_size: int
    stopped_early: bool
    global_steps: int = 0
    stop_reason: str = ""
    skipped_steps: int = 0  # optimizer steps skipped because a loss was NaN/inf
    mixed_precision: str = "no"  # as resolved for this run ("auto" -> "bf16" or "no")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["run_dir"] = str(self.run_dir)
        return data


def _sums_dtype(device: torch.device) -> torch.dtype:
    return torch.float64 if device.type != "mps" else torch.float32  # MPS has no float64


class _Counters:
    """Progress of the loop that a checkpoint must restore exactly (registered with accelerate).

    The non-finite counters are ``guard``'s; they are saved in here, under the key they had before
    the guard existed, so checkpoints written by earlier versions still resume.
    """

    _FIELDS = ("epoch", "batch_in_epoch", "global_step", "best_val_top1", "best_epoch", "best_val", "best_step",
               "train_time_s", "images_seen")

    def __init__(self, device: torch.device, guard: NonFiniteGuard) -> None:
        self.guard = guard
        self.epoch = 0  # the epoch in progress
        self.batch_in_epoch = 0  # micro-batches of that epoch already trained on
        self.global_step = 0  # optimizer steps (skipped non-finite steps included)
        self.best_val_top1 = -math.inf
        self.best_epoch = -1
        self.best_val: dict[str, Any] = {}
        self.best_step: int | None = None  # its checkpoint is never pruned
        self.train_time_s = 0.0
        self.images_seen = 0  # training images over all processes, for images/s
        # per-epoch sums (loss, correct, images), kept on the device so that no step waits for the host
        self.sums = torch.zeros(3, dtype=_sums_dtype(device), device=device)

    def state_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self._FIELDS}, "sums": self.sums.cpu(), **self.guard.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in self._FIELDS:
            setattr(self, k, state[k])
        self.sums = state["sums"].to(self.sums.device)
        self.guard.load_state_dict(state)


class _Timer:
    """Training time and images of the epoch in progress, for ``time_s`` and ``images_per_s``.

    Mid-epoch checkpoints cut an epoch into parts: each part is banked into the checkpointed
    counters before the save (a resumed run then reports the same totals), and the epoch's speed is
    over all its parts. A separate window gives the speed of the last ``log_every_steps`` steps.
    """

    def __init__(self) -> None:
        self.loop_start = time.perf_counter()
        self.start_epoch()

    def start_epoch(self) -> None:
        self.part_start = self.log_start = time.perf_counter()
        self.part_images = self.log_images = 0
        self.done_time, self.done_images = 0.0, 0  # the epoch's parts before a mid-epoch checkpoint

    def count(self, images: int) -> None:
        self.part_images += images
        self.log_images += images

    def log_window(self) -> tuple[float, float]:
        """``(images_per_s, elapsed_s)`` of the log window that ends now; starts the next window."""
        now = time.perf_counter()
        images_per_s = self.log_images / max(now - self.log_start, 1e-9)
        self.log_start, self.log_images = now, 0
        return images_per_s, now - self.loop_start  # elapsed: wall clock since this process began training

    def bank(self, state: _Counters) -> None:
        """Add the part of the epoch up to now to ``state`` and start a new part."""
        part = time.perf_counter() - self.part_start
        state.train_time_s += part
        state.images_seen += self.part_images
        self.done_time, self.done_images = self.done_time + part, self.done_images + self.part_images
        self.part_start, self.part_images = time.perf_counter(), 0

    def end_epoch(self, state: _Counters) -> float:
        """Bank the epoch's last part; returns the epoch's images/s over all its parts."""
        self.bank(state)
        return self.done_images / max(self.done_time, 1e-9)


@dataclass
class TrainingRun:
    """The prepared objects of one run: what ``train_one_epoch`` and ``evaluate`` work with.

    ``model``, ``optimizer`` and the loaders are ``accelerator.prepare``-d; ``state`` (the loop's
    position and counters), ``schedule`` and ``ema`` are registered for checkpointing.
    """

    config: TrainConfig
    run_dir: Path
    accelerator: Any
    model: torch.nn.Module
    head: torch.nn.Module | None  # the only trained part of a linear probe (freeze_backbone)
    optimizer: Any
    schedule: LRSchedule
    ema: Any | None  # timm's ModelEmaV3, with ema_decay
    criterion: Any  # (logits, targets) -> loss
    augment: torch.nn.Module  # uint8 batch -> model input and targets, on the device
    preprocessing: Any  # effv2birds.Preprocessing: what evaluation, predict and export do
    channels_last: bool
    stages: list[Any]  # progressive.StageSettings of every epoch
    train_loader_of: dict[int, Any]  # image size -> its train loader (one per progressive stage size)
    train_split_of: dict[int, Any]  # image size -> its cached train split (data.CachedSplit); with an EMA only
    val_loader: Any
    test_loader: Any | None
    class_names: list[str]
    guard: NonFiniteGuard
    state: _Counters
    metrics_log: MetricsLog
    meta: dict[str, Any]  # saved beside the weights
    facts: Any  # models.ModelFacts: params, GFLOPs

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and saved: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.model


def should_stop_early(epochs_done: int, best_epoch: int, *, min_epochs: int, patience: int | None) -> bool:
    """The study's stopping rule: train at least ``min_epochs``, then stop once validation accuracy
    has not improved for ``patience`` epochs (``None``: never stop early; ``epochs`` caps it anyway).

    >>> should_stop_early(200, 140, min_epochs=150, patience=50)   # the study: 350 / 150 / 50
    True
    >>> should_stop_early(120, 10, min_epochs=150, patience=50)
    False
    """
    if patience is None or epochs_done < min_epochs:
        return False
    return epochs_done - best_epoch >= patience


def train(config: TrainConfig) -> TrainResult:
    """Train a classifier as ``config`` says; returns a ``TrainResult`` and fills ``config.output_dir``.

    See the module docstring for an example and ``docs/training.md`` for launching on several GPUs.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() needs a TrainConfig, got {type(config).__name__}")
    run_dir = Path(config.output_dir).expanduser()
    check_run_dir(run_dir, config)
    # model, weights, tracker, output dir, the checkpoint to resume: before any photo is decoded
    tracker, resume_from = check_before_data(config, run_dir)
    accelerator, precision = _make_accelerator(config, run_dir, tracker)
    stages, splits, class_names, data_report = _load_data(config, accelerator, run_dir)
    run = _prepare(config, accelerator, precision, run_dir, stages, splits, class_names)
    _resume(run, resume_from)
    _start_trackers(run, tracker)

    bar = tqdm(total=len(next(iter(run.train_loader_of.values()))), dynamic_ncols=True,
               disable=not (run.is_main and config.progress_bar))
    timer, stop_reason = _Timer(), ""
    while run.state.epoch < config.epochs and _budget_left(run) and not stop_reason:
        stop_reason = train_one_epoch(run, timer, bar)
        if stop_reason != "nonfinite":  # a diverged epoch is neither evaluated nor checkpointed
            stop_reason = _end_epoch(run, timer, bar, stop_reason)
    bar.close()
    if stop_reason == "nonfinite":
        finish_trackers(accelerator)
        raise run.guard.error(step=run.state.global_step, lr=config.lr, checkpoints=run_dir / CHECKPOINTS)
    return _finish(run, stop_reason, data_report)


# --- the steps of train() ------------------------------------------------------------------------
def _make_accelerator(config: TrainConfig, run_dir: Path, tracker: str | None) -> tuple[Any, str]:
    """The run's ``Accelerator`` and its resolved precision; seeds every process and, on the main
    process, writes ``config.json`` and ``environment.json``."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed

    # several runs in one process (a study, the tests) may use different precision/accumulation
    reset_accelerator_state()
    precision = resolve_mixed_precision(config)
    on_cuda = torch.cuda.is_available() and not config.cpu
    try:
        accelerator = Accelerator(
            mixed_precision=precision,
            gradient_accumulation_steps=config.grad_accum_steps,
            cpu=config.cpu,
            log_with=tracker,
            project_dir=str(run_dir),
            # non_blocking: pinned CPU batches are copied to the GPU while it still computes
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed,
                                                      non_blocking=on_cuda),
        )
    except ValueError as exc:  # e.g. fp16 without a GPU
        raise ConfigError(f"the devices cannot run this config (mixed_precision={precision!r}, "
                          f"cpu={config.cpu}): {exc}") from exc
    check_launched_processes(accelerator)
    slow_bf16 = cpu_bf16_warning(precision, accelerator.device)
    if slow_bf16 and accelerator.is_main_process:
        warnings.warn(slow_bf16, stacklevel=3)
    # every process shuffles with data_seed (same order, different shards) but augments with its own seed
    set_seed(config.seed, device_specific=True)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir)
        write_json(run_dir / ENVIRONMENT, environment_info(accelerator))
    return accelerator, precision


def _load_data(config: TrainConfig, accelerator: Any,
               run_dir: Path) -> tuple[list[Any], dict[str, Any], list[str], dict[str, Any]]:
    """``(stages, splits, class_names, data_report)``; the main process records the data report and
    the train photos' hashes (for ``evaluate``'s leak check)."""
    from effv2birds.data import write_train_hashes
    from effv2birds.progressive import stage_settings

    # progressive learning: one pre-resized train cache per stage size (built once, reused by later
    # runs), so each stage sees the same PIL-resized images as a fixed-size run at that size
    stages = [stage_settings(config, e) for e in range(config.epochs)]
    train_sizes = sorted({s.image_size for s in stages})
    splits, class_names, data_report = load_data(config, accelerator, train_sizes)
    if accelerator.is_main_process:
        write_json(run_dir / DATA_REPORT, data_report)
        write_train_hashes(run_dir, splits["train"][max(splits["train"])])
    return stages, splits, class_names, data_report


def _prepare(config: TrainConfig, accelerator: Any, precision: str, run_dir: Path, stages: list[Any],
             splits: dict[str, Any], class_names: list[str]) -> TrainingRun:
    """Model, preprocessing, loaders, optimizer, schedule, EMA and counters, prepared by accelerate."""
    model_kwargs = _model_kwargs(config, len(class_names))
    model, head, facts, channels_last = _build_model(config, accelerator, model_kwargs)
    augment, preprocessing, meta = _preprocessing(config, class_names, model_kwargs, facts, channels_last,
                                                  accelerator.device)
    train_loaders, val_loader, test_loader = _make_loaders(config, accelerator, splits)
    per_step_batch = config.batch_size * accelerator.num_processes
    optimizer = build_optimizer(model, config, global_batch_size=per_step_batch * config.grad_accum_steps,
                                fused=accelerator.device.type in ("cpu", "cuda"))
    model = _compile(config, model)
    model, optimizer, *train_loaders, val_loader = accelerator.prepare(model, optimizer, *train_loaders, val_loader)
    if test_loader is not None:
        test_loader = accelerator.prepare(test_loader)
    steps_per_epoch = math.ceil(len(train_loaders[0]) / config.grad_accum_steps)
    schedule = build_schedule(optimizer, config, steps_per_epoch=steps_per_epoch)
    ema = None
    if config.ema_decay is not None:
        from timm.utils import ModelEmaV3

        # The EMA copy is a plain module (no DDP, no torch.compile wrapper). Its BatchNorm statistics are
        # the model's own, copied, not averaged: averaged statistics lag the fast-changing activations of a
        # short run and made 5 epochs at decay 0.99 predict one class (4 % on birds25-mini; 19.6 % with copies).
        # Before each evaluation they are measured again with the averaged weights (_measure_ema_statistics).
        ema = ModelEmaV3(accelerator.unwrap_model(model, keep_torch_compile=False), decay=config.ema_decay,
                         exclude_buffers=True)
    device = accelerator.device
    guard = NonFiniteGuard(optimizer, precision, max_streak=config.max_nonfinite_steps, device=device,
                           dtype=_sums_dtype(device))
    state = _Counters(device, guard)
    for obj in (schedule, state) + ((ema,) if ema is not None else ()):  # this order is the checkpoint's
        accelerator.register_for_checkpointing(obj)
    return TrainingRun(
        config=config, run_dir=run_dir, accelerator=accelerator, model=model, head=head, optimizer=optimizer,
        schedule=schedule, ema=ema, criterion=_criterion(config),
        augment=augment, preprocessing=preprocessing, channels_last=channels_last, stages=stages,
        train_loader_of=dict(zip(splits["train"], train_loaders)),  # the caches' sizes, in order
        train_split_of=splits["train"] if ema is not None else {},  # only the EMA's statistics read them
        val_loader=val_loader, test_loader=test_loader, class_names=class_names, guard=guard, state=state,
        metrics_log=MetricsLog(run_dir / METRICS_LOG), meta=meta, facts=facts,
    )


def _model_kwargs(config: TrainConfig, num_classes: int) -> dict[str, Any]:
    """What ``build_model`` needs to rebuild the architecture (saved with the weights)."""
    return dict(name=config.model, num_classes=num_classes,
                variant=config.variant, dropout=config.dropout, stochastic_depth=config.stochastic_depth,
                width_multiplier=config.width_multiplier, depth_multiplier=config.depth_multiplier)


def _criterion(config: TrainConfig) -> Any:
    """The training loss ``(logits, targets) -> loss``; evaluation always reports plain cross-entropy."""
    from effv2birds.training.losses import build_criterion

    return build_criterion(config.loss, label_smoothing=config.label_smoothing)


def _build_model(config: TrainConfig, accelerator: Any, model_kwargs: dict[str, Any]
                 ) -> tuple[torch.nn.Module, torch.nn.Module | None, Any, bool]:
    """``(model, head, facts, channels_last)``: the model with its initial weights, the head of a
    linear probe (else ``None``), its size and GFLOPs, and the memory format it runs in."""
    from effv2birds.models import build_model, model_facts

    model = build_model(**model_kwargs, pretrained=config.pretrained, weights=config.weights,
                        bn_momentum=config.bn_momentum, zero_init_residual=config.zero_init_residual)
    facts = model_facts(model, config.eval_size)
    head = freeze_backbone(model) if config.freeze_backbone else None
    if config.sync_bn and accelerator.num_processes > 1:
        if accelerator.device.type == "cpu":
            warnings.warn("sync_bn=True is ignored on CPU (torch's SyncBatchNorm needs GPUs); "
                          "each process normalises with its own batch statistics", stacklevel=4)  # train()'s caller
        else:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = (config.channels_last if config.channels_last is not None
                     else default_channels_last(accelerator.device))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, head, facts, channels_last


def _preprocessing(config: TrainConfig, class_names: list[str], model_kwargs: dict[str, Any], facts: Any,
                   channels_last: bool, device: torch.device) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """``(augment, preprocessing, meta)``: the train-time augmentation on the device, the run's
    ``Preprocessing`` (what evaluation, predict and export do; the augmentation scales with its
    mean/std), and the metadata saved beside the weights (``"preprocessing"``: its ``to_dict()``)."""
    from effv2birds.data import BatchAugment
    from effv2birds.preprocessing import Preprocessing

    preprocessing = Preprocessing.from_config(config)
    augment = BatchAugment.from_preprocessing(
        preprocessing, len(class_names), random_crop=config.random_crop, crop_padding=config.crop_padding,
        crop_scale_min=config.crop_scale_min, hflip=config.hflip, auto_augment=config.auto_augment,
        randaug_magnitude=config.randaug_magnitude, mixup_alpha=config.mixup_alpha,
        cutmix_alpha=config.cutmix_alpha, channels_last=channels_last,
    ).to(device)
    meta = {"class_names": class_names, "model_kwargs": model_kwargs, "preprocessing": preprocessing.to_dict(),
            "facts": facts.to_dict()}
    return augment, preprocessing, meta


def _make_loaders(config: TrainConfig, accelerator: Any, splits: dict[str, Any]) -> tuple[list[Any], Any, Any]:
    """``(train_loaders, val_loader, test_loader)``: one train loader per cached size, not prepared yet."""
    from effv2birds.data import make_loader

    per_step_batch = config.batch_size * accelerator.num_processes
    # the caches hold the same images, so all train loaders have the same length and shuffle order
    pin = accelerator.device.type == "cuda"
    resident = data_device(config, accelerator, list(splits["train"].values()))
    train_loaders = [make_loader(split, config.batch_size, shuffle=True, seed=config.seed,
                                 drop_last=len(split) >= per_step_batch, device=resident, pin_memory=pin)
                     for split in splits["train"].values()]
    # evaluation keeps no gradients: a bigger batch fits and runs ~2x faster on CPU at batch 12
    val_loader = make_loader(splits["validation"], config.eval_batch, shuffle=False, pin_memory=pin)
    test_loader = (make_loader(splits["test"], config.eval_batch, shuffle=False, pin_memory=pin)
                   if "test" in splits else None)
    return train_loaders, val_loader, test_loader


def _compile(config: TrainConfig, model: torch.nn.Module) -> torch.nn.Module:
    if not config.compile:
        return model
    if config.progressive.enabled:
        # each stage's new size and dropout/drop-path rates fail dynamo's guards once, in train and
        # in eval mode: 2 graphs per stage must fit the recompile limit (8 by default), or dynamo
        # silently falls back to eager for the rest of the run (docs/training.md#progressive-learning)
        import torch._dynamo as dynamo  # binds only `dynamo`: `torch` stays the module global

        dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 2 * config.progressive.stages + 2)
    return torch.compile(model)


def _resume(run: TrainingRun, resume_from: Path | None) -> None:
    """Load the checkpoint (``check_before_data`` resolved it) and drop log lines written after it."""
    if resume_from is not None:
        load_checkpoint(run.accelerator, resume_from)
        if run.is_main:
            run.metrics_log.truncate_after(run.state.global_step)
            run.accelerator.print(f"resumed from {resume_from} (epoch {run.state.epoch}, "
                                  f"batch {run.state.batch_in_epoch})")
    elif run.is_main and run.metrics_log.path.exists():
        run.metrics_log.path.unlink()  # a stale log of a run that never checkpointed


def _start_trackers(run: TrainingRun, tracker: str | None) -> None:
    if tracker:  # project and run named by tracker_init (TensorBoard: run_dir/tensorboard); hparams: plain scalars
        project, init_kwargs = tracker_init(tracker, run.run_dir)
        config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in run.config.to_dict().items()}
        run.accelerator.init_trackers(project, config=config, init_kwargs=init_kwargs)


def _budget_left(run: TrainingRun) -> bool:
    return run.config.max_steps is None or run.state.global_step < run.config.max_steps


# --- one epoch -----------------------------------------------------------------------------------
def train_one_epoch(run: TrainingRun, timer: _Timer, bar: Any) -> str:
    """Train the epoch in progress (``run.state.epoch``), from the batch where it stopped when resumed.

    Logs every ``log_every_steps`` and checkpoints every ``checkpoint_every_steps`` optimizer steps.
    Returns why the run must stop now: ``"nonfinite"`` (``run.guard`` says the loss diverged),
    ``"max_steps"`` (the step budget is spent; the epoch counts as done), or ``""`` (go on). The
    end-of-epoch work (evaluation, records, checkpoint) is the caller's.

    >>> stop_reason = train_one_epoch(run, timer, bar)  # inside train()   # doctest: +SKIP
    """
    accelerator = run.accelerator
    loader = _start_epoch(run, bar)
    timer.start_epoch()
    for images, labels in loader:
        with accelerator.accumulate(run.model):
            _forward_backward(run, images, labels, timer)
            if accelerator.sync_gradients:
                _optimizer_step(run)
        bar.update(1)
        if accelerator.sync_gradients:
            stop_reason = _after_optimizer_step(run, timer, bar)
            if stop_reason:
                return stop_reason
    return "nonfinite" if run.guard.should_stop() else ""


def _start_epoch(run: TrainingRun, bar: Any) -> Any:
    """Set the stage's size and regularization and the shuffle; returns the epoch's (rest of the) loader."""
    from effv2birds.models import set_regularization

    config, state = run.config, run.state
    epoch = state.epoch
    stage = run.stages[epoch]
    train_loader = run.train_loader_of[stage.image_size]  # also right after a resume mid-stage
    if config.progressive.enabled:  # EfficientNetV2 Sec. 4: bigger images, stronger regularization
        run.augment.randaug_magnitude, run.augment.mixup_alpha = stage.randaug_magnitude, stage.mixup_alpha
        set_regularization(run.model, dropout=stage.dropout, stochastic_depth=stage.stochastic_depth)
    set_train_mode(run.model, run.head)
    train_loader.set_epoch(epoch)  # the same shuffle for this epoch, also after a resume
    loader = train_loader
    if state.batch_in_epoch:
        loader = run.accelerator.skip_first_batches(train_loader, state.batch_in_epoch)
        loader.set_epoch(epoch)
    bar.reset(total=len(train_loader))
    bar.update(state.batch_in_epoch)
    bar.set_description(f"epoch {epoch + 1}/{config.epochs} {stage.image_size}px")
    return loader


def _forward_backward(run: TrainingRun, images: torch.Tensor, labels: torch.Tensor, timer: _Timer) -> None:
    """One micro-batch; its loss, correct predictions and size are added to the sums on the device."""
    inputs, targets = run.augment(images, labels)
    logits = run.model(inputs)
    loss = run.criterion(logits.float(), targets)
    run.accelerator.backward(loss)
    # running sums stay on the device: no host sync per step
    hard = targets if targets.ndim == 1 else targets.argmax(dim=-1)
    bad = run.guard.observe(loss)
    n = labels.shape[0]
    sums = run.state.sums  # in-place adds with Python scalars: kernels only, no host copies
    sums[0] += torch.where(bad, 0.0, loss.detach().to(sums.dtype) * n)
    sums[1] += (logits.detach().argmax(-1) == hard).sum()
    sums[2] += n
    run.state.batch_in_epoch += 1
    timer.count(n * run.accelerator.num_processes)


def _optimizer_step(run: TrainingRun) -> None:
    """The step at the end of an accumulation: skipped (on the device where possible) after a NaN/inf loss."""
    accelerator, guard = run.accelerator, run.guard
    bad = guard.end_step(accelerator.reduce)
    if guard.may_step(bad):
        if run.config.grad_clip is not None:
            accelerator.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
        with guard.skip_if(bad):
            run.optimizer.step()
        if run.ema is not None:  # after a skipped step the weights it averages are unchanged
            run.ema.update(accelerator.unwrap_model(run.model, keep_torch_compile=False), step=run.state.global_step)
    run.optimizer.zero_grad(set_to_none=True)
    run.state.global_step += 1
    run.schedule.step()


def _after_optimizer_step(run: TrainingRun, timer: _Timer, bar: Any) -> str:
    """Stop checks, logging and step checkpoints after an optimizer step; returns a stop reason or ``""``."""
    config, step = run.config, run.state.global_step
    if run.guard.should_stop(step, read_every=config.log_every_steps):
        return "nonfinite"
    if step % config.log_every_steps == 0:
        _log_step(run, timer, bar)
    if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
        timer.bank(run.state)  # checkpoint time does not count as training
        _save(run)
    if config.max_steps is not None and step >= config.max_steps:
        return "max_steps"
    return ""


def _log_step(run: TrainingRun, timer: _Timer, bar: Any) -> None:
    state = run.state
    sums = run.accelerator.reduce(state.sums.clone(), reduction="sum").tolist()
    images_per_s, elapsed_s = timer.log_window()  # after the read, so the queued GPU work is done
    record = {"kind": "step", "step": state.global_step, "epoch": state.epoch,
              "loss": sums[0] / max(sums[2], 1), "top1": sums[1] / max(sums[2], 1),
              "lr": run.schedule.get_last_lr()[0], "images_per_s": images_per_s, "elapsed_s": elapsed_s}
    if run.is_main:
        run.metrics_log.write(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['top1']:.3f}", img_s=f"{images_per_s:.0f}")
    run.accelerator.log({f"train/{k}": record[k] for k in ("loss", "top1", "lr", "images_per_s")},
                        step=state.global_step)


# --- end of an epoch (or of the step budget): evaluate, record, checkpoint -----------------------
def _end_epoch(run: TrainingRun, timer: _Timer, bar: Any, stop_reason: str) -> str:
    """Evaluate when due, keep the best weights, log the epoch, checkpoint; returns the stop reason
    (``"early_stop"`` when the stopping rule fires, else ``stop_reason`` as given)."""
    config, state = run.config, run.state
    epoch = state.epoch
    images_per_s = timer.end_epoch(state)
    sums = run.accelerator.reduce(state.sums.clone(), reduction="sum").tolist()
    last_epoch = epoch + 1 >= config.epochs or stop_reason == "max_steps"
    record = {"kind": "epoch", "epoch": epoch + 1, "step": state.global_step,
              "train_loss": sums[0] / max(sums[2], 1), "train_top1": sums[1] / max(sums[2], 1),
              "lr": run.schedule.get_last_lr()[0], "images_per_s": images_per_s,
              "time_s": state.train_time_s, **run.stages[epoch].to_dict()}  # stage, image_size, regularization
    if (epoch + 1) % config.eval_every_epochs == 0 or last_epoch:
        _measure_ema_statistics(run, run.stages[epoch].image_size)
        val = evaluate(run, run.val_loader)
        record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"], val_macro_f1=val["macro_f1"])
        _keep_if_best(run, val)
        if not last_epoch and should_stop_early(epoch + 1, state.best_epoch, min_epochs=config.min_epochs,
                                                patience=config.early_stop_patience):
            stop_reason = "early_stop"
    if run.is_main:
        run.metrics_log.write(record)
        bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in record.items() if k != "kind"))
    run.accelerator.log({f"epoch/{k}": v for k, v in record.items() if isinstance(v, (int, float))},
                        step=state.global_step)
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    state.sums.zero_()
    if config.checkpoint_every_epochs and (state.epoch % config.checkpoint_every_epochs == 0 or stop_reason
                                           or state.epoch >= config.epochs):
        _save(run)
    return stop_reason


def evaluate(run: TrainingRun, loader: Any) -> dict[str, Any]:
    """Metrics of ``run.eval_model`` (the EMA weights when there are any) on a prepared loader, with
    the run's normalisation: ``top1, top5, macro_f1, loss, per_class_accuracy, confusion_matrix,
    num_samples, class_names`` (``evaluate_model``; every process gets the same numbers).

    >>> val = evaluate(run, run.val_loader)  # inside train()   # doctest: +SKIP
    >>> 0.0 <= val["top1"] <= 1.0                                # doctest: +SKIP
    True
    """
    return evaluate_model(run.eval_model, loader, run.accelerator, preprocessing=run.preprocessing,
                          channels_last=run.channels_last, num_classes=len(run.class_names),
                          class_names=run.class_names)


def _measure_ema_statistics(run: TrainingRun, image_size: int) -> None:
    """Give the EMA copy BatchNorm statistics of its own weights, measured on up to ``ema_bn_images`` train
    photos of this stage's size as evaluation sees them (no augmentation). Every process uses the same
    photos, so no collective is needed; the next EMA update copies the model's statistics back."""
    config = run.config
    if run.ema is None or not config.ema_bn_images or config.freeze_backbone:  # a probe's stay as loaded
        return
    device = run.accelerator.device
    photos = sample_images(run.train_split_of[image_size].images, max_images=config.ema_bn_images,
                           batch_size=config.eval_batch, seed=config.seed)
    inputs = (run.preprocessing.to_model_input(batch.to(device), channels_last=run.channels_last) for batch in photos)
    recompute_bn_statistics(run.ema.module, inputs, autocast=run.accelerator.autocast)


def _keep_if_best(run: TrainingRun, val: dict[str, Any]) -> None:
    """Step the plateau schedule; save ``model/best.safetensors`` when ``val`` is the best so far."""
    state, epoch = run.state, run.state.epoch + 1
    run.schedule.epoch_end(val["top1"])
    if val["top1"] > state.best_val_top1:
        state.best_val_top1, state.best_epoch, state.best_val = val["top1"], epoch, val
        state.best_step = state.global_step
        weights = _weights_now(run)  # on every process: gathering the weights may be collective
        if run.is_main:
            save_weights(weights, weights_file(run.run_dir, "best"),
                         {**run.meta, "epoch": epoch, "val_top1": val["top1"]})


def _save(run: TrainingRun) -> None:
    """Checkpoint everything (every process), then prune all but the last ``keep_last`` and the best."""
    state, root = run.state, run.run_dir / CHECKPOINTS
    summary = {"epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "global_step": state.global_step,
               "best_epoch": state.best_epoch, "best_val_top1": state.best_val_top1}
    save_checkpoint(run.accelerator, root, state.global_step, summary)
    if run.is_main:
        best = {checkpoint_name(state.best_step)} if state.best_step is not None else set()
        prune_checkpoints(root, run.config.keep_last, keep=best)


def _weights_now(run: TrainingRun) -> dict[str, torch.Tensor]:
    weights = run.accelerator.get_state_dict(run.eval_model)
    return {k.replace("_orig_mod.", ""): v for k, v in weights.items()}  # torch.compile's prefix


# --- finish: last weights, best weights on the test split, records -------------------------------
def _finish(run: TrainingRun, stop_reason: str, data_report: dict[str, Any]) -> TrainResult:
    config, accelerator, state, run_dir = run.config, run.accelerator, run.state, run.run_dir
    weights = _weights_now(run)
    if run.is_main:
        save_weights(weights, weights_file(run_dir, "last"), {**run.meta, "epoch": state.epoch})
    accelerator.wait_for_everyone()
    test = None
    if run.test_loader is not None and weights_file(run_dir, "best").exists():
        best_state, _ = read_weights(weights_file(run_dir, "best"))
        accelerator.unwrap_model(run.eval_model, keep_torch_compile=False).load_state_dict(best_state)
        test = evaluate(run, run.test_loader)
    result = TrainResult(
        run_dir=run_dir, best_epoch=state.best_epoch, epochs_run=state.epoch, best_val_top1=state.best_val_top1,
        val=state.best_val, test=test, train_time_s=state.train_time_s,
        images_per_s=state.images_seen / max(state.train_time_s, 1e-9), params=run.facts.params,
        gflops=run.facts.gflops, device=str(accelerator.device), world_size=accelerator.num_processes,
        stopped_early=stop_reason == "early_stop", global_steps=state.global_step, stop_reason=stop_reason or "epochs",
        skipped_steps=run.guard.skipped, mixed_precision=accelerator.mixed_precision,
    )
    if run.is_main:
        write_json(run_dir / SUMMARY, {"status": "finished", **result.to_dict()})
        write_model_card(run_dir, config=config, result=result.to_dict(), meta=run.meta, data_summary=data_report)
    finish_trackers(accelerator)
    return result
