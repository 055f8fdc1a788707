"""``train(config)``: one ``accelerate`` training loop from CPU to many GPUs on many nodes.

The loop follows accelerate's examples: build an ``Accelerator``, load the data under
``main_process_first``, one ``prepare``, ``accumulate`` around every micro-batch,
``gather_for_metrics`` for exact evaluation counts, ``save_state``/``load_state`` for resume.
Start it with ``python -m effv2birds train ...`` or ``accelerate launch -m effv2birds train ...``.

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
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effv2birds.config import ConfigError, TrainConfig
from effv2birds.training.checkpoint import (checkpoint_name, load_checkpoint, prune_checkpoints, resolve_resume,
                                            save_checkpoint)
from effv2birds.training.evaluation import evaluate_model
from effv2birds.training.optim import build_optimizer, build_schedule, nonfinite_skipper
from effv2birds.training.records import (MetricsLog, environment_info, read_weights, save_weights, write_json,
                                         write_model_card)
from effv2birds.training.setup import (check_before_data, check_run_dir, data_device, default_channels_last,
                                       finish_trackers, freeze_backbone, load_data, set_train_mode, tracker_init)

__all__ = ["train", "TrainResult", "NonFiniteLossError", "should_stop_early"]


class NonFiniteLossError(RuntimeError):
    """The loss was NaN/inf for ``max_nonfinite_steps`` optimizer steps in a row."""


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


class _Counters:
    """Progress of the loop that a checkpoint must restore exactly (registered with accelerate)."""

    def __init__(self, device: torch.device) -> None:
        self.epoch = 0  # the epoch in progress
        self.batch_in_epoch = 0  # micro-batches of that epoch already trained on
        self.global_step = 0  # optimizer steps (skipped non-finite steps included)
        self.best_val_top1 = -math.inf
        self.best_epoch = -1
        self.best_val: dict[str, Any] = {}
        self.best_step: int | None = None  # its checkpoint is never pruned
        self.train_time_s = 0.0
        self.images_seen = 0  # training images over all processes, for images/s
        # per-epoch sums (loss, correct, images) and non-finite-step counters (current streak,
        # longest streak, total skipped), kept on the device so that no step waits for the host
        dtype = torch.float64 if device.type != "mps" else torch.float32
        self.sums = torch.zeros(3, dtype=dtype, device=device)
        self.nonfinite = torch.zeros(3, dtype=dtype, device=device)

    def state_dict(self) -> dict[str, Any]:
        return {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.sums.device
        self.__dict__.update(state)
        for name, value in list(self.__dict__.items()):
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))

    def count_step(self, bad: torch.Tensor) -> None:
        """Update the non-finite counters with this step's 0/1 flag, on the device."""
        streak, longest, total = self.nonfinite.unbind()
        streak.add_(bad).mul_(bad)  # +1 while bad, back to 0 after a good step
        torch.maximum(longest, streak, out=longest)
        total.add_(bad)


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
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from effv2birds.data import BatchAugment, make_loader, write_train_hashes
    from effv2birds.models import build_model, get_transforms, model_facts, set_regularization
    from effv2birds.progressive import stage_settings
    from effv2birds.training.setup import resolve_mixed_precision

    if not isinstance(config, TrainConfig):
        raise TypeError(f"train() needs a TrainConfig, got {type(config).__name__}")
    run_dir = Path(config.output_dir).expanduser()
    check_run_dir(run_dir, config)
    tracker = check_before_data(config, run_dir)  # model, weights, tracker, output dir: before any photo is decoded
    # Several runs in one process (a study, the tests) may use different precision/accumulation:
    # forget the previous run's accelerator settings, but keep the process group.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
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
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched != accelerator.num_processes:
        # e.g. torchrun on a machine without GPUs and without --cpu: N independent runs would
        # write into the same output_dir
        raise ConfigError(
            f"{launched} processes were launched but accelerate runs {accelerator.num_processes} "
            f"({accelerator.distributed_type}); without GPUs pass cpu=True (--cpu) for a gloo process group"
        )
    is_main = accelerator.is_main_process
    # every process shuffles with data_seed (same order, different shards) but augments with its own seed
    set_seed(config.seed, device_specific=True)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir)
        write_json(run_dir / "environment.json", environment_info(accelerator))

    # --- data ----------------------------------------------------------------------------------
    # progressive learning: one pre-resized train cache per stage size (built once, reused by later
    # runs), so each stage sees the same PIL-resized images as a fixed-size run at that size
    stages = [stage_settings(config, e) for e in range(config.epochs)]
    train_sizes = sorted({s.image_size for s in stages})
    splits, class_names, data_report = load_data(config, accelerator, train_sizes)
    if is_main:
        write_json(run_dir / "data_report.json", data_report)
        write_train_hashes(run_dir, splits["train"][max(splits["train"])])  # for evaluate's leak check
    num_classes = len(class_names)

    # --- model, optimizer, schedule --------------------------------------------------------------
    model_kwargs = dict(name=config.model, backend=config.backend, num_classes=num_classes,
                        variant=config.variant, dropout=config.dropout, stochastic_depth=config.stochastic_depth,
                        width_multiplier=config.width_multiplier, depth_multiplier=config.depth_multiplier)
    model = build_model(**model_kwargs, pretrained=config.pretrained, weights=config.weights,
                        zero_init_residual=config.zero_init_residual)
    facts = model_facts(model, config.eval_size)
    transforms = get_transforms(config.model, backend=config.backend, pretrained=config.pretrained,
                                weights=config.weights, image_size=config.eval_size)
    mean, std = transforms.mean, transforms.std
    head = freeze_backbone(model) if config.freeze_backbone else None
    if config.sync_bn and accelerator.num_processes > 1:
        if accelerator.device.type == "cpu":
            warnings.warn("sync_bn=True is ignored on CPU (torch's SyncBatchNorm needs GPUs); "
                          "each process normalises with its own batch statistics", stacklevel=2)
        else:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = (config.channels_last if config.channels_last is not None
                     else default_channels_last(accelerator.device))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    per_step_batch = config.batch_size * accelerator.num_processes
    # the caches hold the same images, so all train loaders have the same length and shuffle order
    pin = accelerator.device.type == "cuda"
    resident = data_device(config, accelerator, list(splits["train"].values()))
    train_loaders = [make_loader(split, config.batch_size, shuffle=True, seed=config.seed,
                                 drop_last=len(split) >= per_step_batch, device=resident, pin_memory=pin)
                     for split in splits["train"].values()]
    val_loader = make_loader(splits["validation"], config.batch_size, shuffle=False, pin_memory=pin)
    test_loader = (make_loader(splits["test"], config.batch_size, shuffle=False, pin_memory=pin)
                   if "test" in splits else None)
    optimizer = build_optimizer(model, config, global_batch_size=per_step_batch * config.grad_accum_steps,
                                fused=accelerator.device.type in ("cpu", "cuda"))
    if config.compile:
        if config.progressive.enabled:
            # each stage's new size and dropout/drop-path rates fail dynamo's guards once, in train and
            # in eval mode: 2 graphs per stage must fit the recompile limit (8 by default), or dynamo
            # silently falls back to eager for the rest of the run (docs/training.md#progressive-learning)
            import torch._dynamo as dynamo  # binds only `dynamo`: `torch` stays the module global

            dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 2 * config.progressive.stages + 2)
        model = torch.compile(model)
    model, optimizer, *train_loaders, val_loader = accelerator.prepare(model, optimizer, *train_loaders, val_loader)
    train_loader_of = dict(zip(splits["train"], train_loaders))  # image size -> its prepared loader
    if test_loader is not None:
        test_loader = accelerator.prepare(test_loader)
    steps_per_epoch = math.ceil(len(train_loaders[0]) / config.grad_accum_steps)
    schedule = build_schedule(optimizer, config, steps_per_epoch=steps_per_epoch)
    augment = BatchAugment(
        num_classes, mean=mean, std=std, normalize=config.normalize, random_crop=config.random_crop,
        crop_padding=config.crop_padding, crop_scale_min=config.crop_scale_min, hflip=config.hflip,
        auto_augment=config.auto_augment, randaug_magnitude=config.randaug_magnitude,
        mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, channels_last=channels_last,
    ).to(accelerator.device)
    ema = None
    if config.ema_decay is not None:
        from timm.utils import ModelEmaV3

        # the EMA copy is a plain module (no DDP, no torch.compile wrapper)
        ema = ModelEmaV3(accelerator.unwrap_model(model, keep_torch_compile=False), decay=config.ema_decay)
    state = _Counters(accelerator.device)
    for obj in (schedule, state) + ((ema,) if ema is not None else ()):
        accelerator.register_for_checkpointing(obj)

    meta = {
        "class_names": class_names, "model_kwargs": model_kwargs, "transforms": transforms.to_dict(),
        "preprocessing": {"image_size": config.eval_size, "resize": config.resize, "mean": list(mean),
                          "std": list(std), "normalize": config.normalize},
        "facts": facts.to_dict(),
    }
    metrics_log = MetricsLog(run_dir / "metrics.jsonl")

    # --- resume -----------------------------------------------------------------------------------
    resume_from = resolve_resume(config.resume, run_dir) if config.resume else None
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from)
        if is_main:
            metrics_log.truncate_after(state.global_step)
            accelerator.print(f"resumed from {resume_from} (epoch {state.epoch}, batch {state.batch_in_epoch})")
    elif is_main and metrics_log.path.exists():
        metrics_log.path.unlink()  # a stale log of a run that never checkpointed
    if tracker:  # project and run named by tracker_init (TensorBoard: run_dir/tensorboard); hparams: plain scalars
        project, init_kwargs = tracker_init(tracker, run_dir)
        accelerator.init_trackers(project, config={k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                                   for k, v in config.to_dict().items()}, init_kwargs=init_kwargs)

    def save() -> None:
        summary = {"epoch": state.epoch, "batch_in_epoch": state.batch_in_epoch, "global_step": state.global_step,
                   "best_epoch": state.best_epoch, "best_val_top1": state.best_val_top1}
        save_checkpoint(accelerator, run_dir / "checkpoints", state.global_step, summary)
        if is_main:
            best = {checkpoint_name(state.best_step)} if state.best_step is not None else set()
            prune_checkpoints(run_dir / "checkpoints", config.keep_last, keep=best)

    def eval_model() -> torch.nn.Module:
        return ema.module if ema is not None else model

    def evaluate(loader: Any) -> dict[str, Any]:
        return evaluate_model(eval_model(), loader, accelerator, mean=mean, std=std, normalize=config.normalize,
                              channels_last=channels_last, num_classes=num_classes, class_names=class_names)

    def weights_now() -> dict[str, torch.Tensor]:
        weights = accelerator.get_state_dict(eval_model())
        return {k.replace("_orig_mod.", ""): v for k, v in weights.items()}  # torch.compile's prefix

    # --- the loop ---------------------------------------------------------------------------------
    skip_on_device, skip_if = nonfinite_skipper(optimizer, precision)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    stop_reason = ""
    stopped_early = False
    bar = tqdm(total=len(train_loaders[0]), disable=not (is_main and config.progress_bar), dynamic_ncols=True)

    def budget_left() -> bool:
        return config.max_steps is None or state.global_step < config.max_steps

    loop_start = time.perf_counter()
    while state.epoch < config.epochs and budget_left() and not stop_reason:
        epoch = state.epoch
        stage = stages[epoch]
        train_loader = train_loader_of[stage.image_size]  # also right after a resume mid-stage
        if config.progressive.enabled:  # EfficientNetV2 Sec. 4: bigger images, stronger regularization
            augment.randaug_magnitude, augment.mixup_alpha = stage.randaug_magnitude, stage.mixup_alpha
            set_regularization(model, dropout=stage.dropout, stochastic_depth=stage.stochastic_depth)
        set_train_mode(model, head)
        train_loader.set_epoch(epoch)  # the same shuffle for this epoch, also after a resume
        loader = train_loader
        if state.batch_in_epoch:
            loader = accelerator.skip_first_batches(train_loader, state.batch_in_epoch)
            loader.set_epoch(epoch)
        bar.reset(total=len(train_loader))
        bar.update(state.batch_in_epoch)
        bar.set_description(f"epoch {epoch + 1}/{config.epochs} {stage.image_size}px")
        epoch_start, epoch_images = time.perf_counter(), 0
        done_time, done_images = 0.0, 0  # parts of this epoch before a mid-epoch checkpoint
        log_start, log_images = epoch_start, 0
        step_bad = torch.zeros((), dtype=torch.bool, device=accelerator.device)
        for images, labels in loader:
            with accelerator.accumulate(model):
                inputs, targets = augment(images, labels)
                logits = model(inputs)
                loss = criterion(logits.float(), targets)
                accelerator.backward(loss)
                # running sums stay on the device: no host sync per step
                hard = targets if targets.ndim == 1 else targets.argmax(dim=-1)
                bad = ~torch.isfinite(loss.detach())
                step_bad |= bad
                n = labels.shape[0]
                sums = state.sums  # in-place adds with Python scalars: kernels only, no host copies
                sums[0] += torch.where(bad, 0.0, loss.detach().to(sums.dtype) * n)
                sums[1] += (logits.detach().argmax(-1) == hard).sum()
                sums[2] += n
                state.batch_in_epoch += 1
                epoch_images += n * accelerator.num_processes
                log_images += n * accelerator.num_processes
                if accelerator.sync_gradients:
                    # 1.0 when any process saw a NaN/inf loss: every process skips the step alike
                    bad_step = accelerator.reduce(step_bad.to(state.nonfinite.dtype), reduction="sum").clamp_(max=1)
                    step_bad.zero_()
                    state.count_step(bad_step)
                    if skip_on_device or not bad_step.item():  # .item() only for optimizers that need it
                        if config.grad_clip is not None:
                            accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                        with skip_if(bad_step):
                            optimizer.step()
                        if ema is not None:  # after a skipped step the weights it averages are unchanged
                            ema.update(accelerator.unwrap_model(model, keep_torch_compile=False),
                                       step=state.global_step)
                    optimizer.zero_grad(set_to_none=True)
                    state.global_step += 1
                    schedule.step()
            bar.update(1)
            if accelerator.sync_gradients:
                # without a host-side skip the streak is read at logging time only (one sync per
                # log_every_steps); the steps in between were skipped on the device anyway
                if ((not skip_on_device or state.global_step % config.log_every_steps == 0)
                        and state.nonfinite[1].item() >= config.max_nonfinite_steps):
                    stop_reason = "nonfinite"
                    break
                if state.global_step % config.log_every_steps == 0:
                    sums = accelerator.reduce(state.sums.clone(), reduction="sum").tolist()
                    now = time.perf_counter()  # after the read, so the queued GPU work is done
                    ips = log_images / max(now - log_start, 1e-9)
                    record = {"kind": "step", "step": state.global_step, "epoch": epoch,
                              "loss": sums[0] / max(sums[2], 1), "top1": sums[1] / max(sums[2], 1),
                              "lr": schedule.get_last_lr()[0], "images_per_s": ips,
                              "elapsed_s": now - loop_start}  # wall clock since this process began training
                    if is_main:
                        metrics_log.write(record)
                        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['top1']:.3f}",
                                        img_s=f"{ips:.0f}")
                    accelerator.log({f"train/{k}": record[k] for k in ("loss", "top1", "lr", "images_per_s")},
                                    step=state.global_step)
                    log_start, log_images = now, 0
                if config.checkpoint_every_steps and state.global_step % config.checkpoint_every_steps == 0:
                    part = time.perf_counter() - epoch_start  # checkpoint time does not count as training
                    state.train_time_s += part
                    state.images_seen += epoch_images
                    done_time, done_images = done_time + part, done_images + epoch_images
                    epoch_start, epoch_images = time.perf_counter(), 0
                    save()
                if config.max_steps is not None and state.global_step >= config.max_steps:
                    stop_reason = "max_steps"
                    break
        if not stop_reason and state.nonfinite[1].item() >= config.max_nonfinite_steps:
            stop_reason = "nonfinite"
        if stop_reason == "nonfinite":
            break
        # --- end of epoch (or of the step budget): evaluate, record, checkpoint ----------------
        train_time = time.perf_counter() - epoch_start
        state.train_time_s += train_time
        state.images_seen += epoch_images
        sums = accelerator.reduce(state.sums.clone(), reduction="sum").tolist()
        last_epoch = epoch + 1 >= config.epochs or stop_reason == "max_steps"
        record = {"kind": "epoch", "epoch": epoch + 1, "step": state.global_step,
                  "train_loss": sums[0] / max(sums[2], 1), "train_top1": sums[1] / max(sums[2], 1),
                  "lr": schedule.get_last_lr()[0],
                  "images_per_s": (done_images + epoch_images) / max(done_time + train_time, 1e-9),
                  "time_s": state.train_time_s, **stage.to_dict()}  # stage, image_size, regularization
        if (epoch + 1) % config.eval_every_epochs == 0 or last_epoch:
            val = evaluate(val_loader)
            record.update(val_loss=val["loss"], val_top1=val["top1"], val_top5=val["top5"],
                          val_macro_f1=val["macro_f1"])
            schedule.epoch_end(val["top1"])
            if val["top1"] > state.best_val_top1:
                state.best_val_top1, state.best_epoch, state.best_val = val["top1"], epoch + 1, val
                state.best_step = state.global_step
                weights = weights_now()
                if is_main:
                    save_weights(weights, run_dir / "model" / "best.safetensors",
                                 {**meta, "epoch": epoch + 1, "val_top1": val["top1"]})
            if not last_epoch and should_stop_early(epoch + 1, state.best_epoch, min_epochs=config.min_epochs,
                                                    patience=config.early_stop_patience):
                stop_reason, stopped_early = "early_stop", True
        if is_main:
            metrics_log.write(record)
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in record.items() if k != "kind"))
        accelerator.log({f"epoch/{k}": v for k, v in record.items() if isinstance(v, (int, float))},
                        step=state.global_step)
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.sums.zero_()
        if config.checkpoint_every_epochs and (state.epoch % config.checkpoint_every_epochs == 0 or stop_reason
                                               or state.epoch >= config.epochs):
            save()
    bar.close()

    if stop_reason == "nonfinite":
        finish_trackers(accelerator)
        raise NonFiniteLossError(
            f"the loss was NaN or infinite for {int(state.nonfinite[1].item())} optimizer steps in a row "
            f"(step {state.global_step}; max_nonfinite_steps={config.max_nonfinite_steps}); those steps were "
            f"skipped and the run stopped. Try a lower lr "
            f"(now {config.lr}), grad_clip=1.0, mixed_precision='bf16' instead of 'fp16', or check the data. "
            f"Checkpoints so far are in {run_dir / 'checkpoints'}."
        )

    # --- finish: last weights, best weights on the test split, records ---------------------------------
    weights = weights_now()
    if is_main:
        save_weights(weights, run_dir / "model" / "last.safetensors", {**meta, "epoch": state.epoch})
    accelerator.wait_for_everyone()
    test = None
    if test_loader is not None and (run_dir / "model" / "best.safetensors").exists():
        best_state, _ = read_weights(run_dir / "model" / "best.safetensors")
        accelerator.unwrap_model(eval_model(), keep_torch_compile=False).load_state_dict(best_state)
        test = evaluate(test_loader)
    result = TrainResult(
        run_dir=run_dir, best_epoch=state.best_epoch, epochs_run=state.epoch, best_val_top1=state.best_val_top1,
        val=state.best_val, test=test, train_time_s=state.train_time_s,
        images_per_s=state.images_seen / max(state.train_time_s, 1e-9), params=facts.params, gflops=facts.gflops,
        device=str(accelerator.device), world_size=accelerator.num_processes, stopped_early=stopped_early,
        global_steps=state.global_step, stop_reason=stop_reason or "epochs",
        skipped_steps=int(state.nonfinite[2].item()), mixed_precision=accelerator.mixed_precision,
    )
    if is_main:
        write_json(run_dir / "metrics.json", {"status": "finished", **result.to_dict()})
        write_model_card(run_dir, config=config, result=result.to_dict(), meta=meta, data_summary=data_report)
    finish_trackers(accelerator)
    return result
