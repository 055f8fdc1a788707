"""End-to-end training runs on tiny synthetic data (CPU, a few steps each)."""

import json
import math
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

from effv2birds import ConfigError, TrainConfig
from effv2birds.training import NonFiniteLossError, TrainResult, load_trained, should_stop_early, train
from effv2birds.training.records import read_weights

TINY = dict(data="synthetic", synthetic_size=48, max_samples=48, image_size=32, batch_size=8, epochs=1,
            width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True,
            log_every_steps=2, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny(tmp_path, cache_dir, name="run", **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "cache_dir": cache_dir, "output_dir": str(tmp_path / name), **changes})


def _lines(run_dir, kind):
    lines = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == kind]


def test_run_directory_and_result(tmp_path, cache_dir):
    cfg = tiny(tmp_path, cache_dir, epochs=2, checkpoint_every_epochs=1, keep_last=1, log_with="auto")
    result = train(cfg)
    assert isinstance(result, TrainResult)
    run = Path(result.run_dir)
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2 and result.world_size == 1
    assert result.device == "cpu" and result.params > 0 and result.gflops > 0 and result.images_per_s > 0
    report = json.loads((run / "data_report.json").read_text())
    assert result.val["num_samples"] == report["cached_splits"]["validation"]
    assert result.best_val_top1 == result.val["top1"]
    assert set(result.test) >= {"top1", "top5", "macro_f1", "loss", "per_class_accuracy", "confusion_matrix"}
    for name in ("config.json", "config.toml", "environment.json", "metrics.jsonl", "metrics.json", "README.md",
                 "data_report.json", "model/best.safetensors", "model/last.safetensors", "model/best.json"):
        assert (run / name).is_file(), name
    assert TrainConfig.from_file(run / "config.toml") == cfg
    env = json.loads((run / "environment.json").read_text())
    assert env["world_size"] == 1 and env["mixed_precision"] == "no" and "torch" in env["packages"]
    final = json.loads((run / "metrics.json").read_text())
    assert final["status"] == "finished" and final["best_val_top1"] == result.best_val_top1
    epochs = _lines(run, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "val_macro_f1", "lr",
                "images_per_s", "image_size", "time_s"):
        assert all(key in e for e in epochs), key
    assert max(e["val_top1"] for e in epochs) == result.best_val_top1
    steps = _lines(run, "step")
    assert steps and all(math.isfinite(s["loss"]) for s in steps)
    # keep_last=1 but the best checkpoint is never pruned
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert 1 <= len(ckpts) <= 2 and f"step-{epochs[-1]['step']:08d}" in ckpts
    state, meta = read_weights(run / "model" / "best.safetensors")
    assert len(meta["class_names"]) == result.val["confusion_matrix"].__len__()
    assert meta["preprocessing"]["image_size"] == 32 and meta["model_kwargs"]["num_classes"] == len(meta["class_names"])
    try:
        import tensorboard  # noqa: F401  (log_with="auto" uses it when installed)

        assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    except ImportError:
        assert not (run / "tensorboard").exists()
    card = (run / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: image-classification" in card and "## How to use" in card
    # inference gives the classes of the run with probabilities that sum to <= 1
    import PIL.Image

    pred = load_trained(run, device="cpu").predict([PIL.Image.new("RGB", (50, 40), (200, 30, 30))], top_k=3)
    assert len(pred) == 1 and len(pred[0]) == 3
    assert all(label in meta["class_names"] for label, _ in pred[0])
    probs = [p for _, p in pred[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    # the same output_dir again without resume is refused, nothing overwritten
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg)


@pytest.mark.parametrize(
    "changes",
    [
        dict(optimizer="sgd", schedule="cosine", mixed_precision="bf16"),
        dict(optimizer="adamw", schedule="step", step_epochs=1, grad_accum_steps=2, batch_size=4, grad_clip=1.0),
        dict(optimizer="adam", schedule="plateau", ema_decay=0.9, ema_bn_images=0),
        dict(optimizer="rmsprop", schedule="constant", lr=1e-3, mixed_precision="bf16", grad_accum_steps=3),
        # fp16 with loss scaling; TrainConfig refuses fp16 with cpu=True, but torch/accelerate run it on a
        # CPU-only machine too (and on the GPU when there is one)
        dict(optimizer="adamw", schedule="cosine", mixed_precision="fp16", cpu=False, grad_clip=1.0),
    ],
    ids=["sgd-cosine-bf16", "adamw-step-accum-clip", "adam-plateau-ema", "rmsprop-constant-bf16-accum",
         "adamw-cosine-fp16"],
)
@pytest.mark.filterwarnings("ignore:mixed_precision='bf16' on a CPU")  # the slow-bf16 warning: tested below
def test_optimizers_schedules_precisions_accumulation(tmp_path, cache_dir, changes):
    cfg = tiny(tmp_path, cache_dir, epochs=2, **changes)
    result = train(cfg)
    train_images = json.loads((Path(result.run_dir) / "data_report.json").read_text())["cached_splits"]["train"]
    batches = train_images // cfg.batch_size  # drop_last
    assert result.global_steps == 2 * math.ceil(batches / cfg.grad_accum_steps)
    epochs = _lines(result.run_dir, "epoch")
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["val_loss"]) for e in epochs)
    env = json.loads((Path(result.run_dir) / "environment.json").read_text())
    expected = cfg.mixed_precision if cfg.mixed_precision != "auto" else "no"  # "auto" on a CPU: fp32
    assert env["mixed_precision"] == result.mixed_precision == expected
    first, _ = read_weights(Path(result.run_dir) / "model" / "last.safetensors")
    init = load_trained(result.run_dir, "last", device="cpu")  # loads cleanly into a fresh model
    assert set(init.model.state_dict()) == set(first)
    lrs = [s["lr"] for s in _lines(result.run_dir, "step")]
    assert all(lr > 0 for lr in lrs[:-1])  # the last one may be 0: cosine reaches 0 at the very last step
    if cfg.ema_decay is not None:  # ema_bn_images=0: averaged weights, the model's own BatchNorm statistics
        raw, _ = read_weights(sorted((Path(result.run_dir) / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
        buffers = {n for n, _ in init.model.named_buffers()}
        assert buffers and all(torch.equal(first[k], raw[k]) for k in buffers)
        assert any(not torch.equal(first[k], raw[k]) for k in set(first) - buffers)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])  # skipped on the host / on the device (fused)
def test_nonfinite_losses_are_skipped_then_stop_with_advice(tmp_path, cache_dir, monkeypatch, optimizer):
    real = torch.nn.CrossEntropyLoss.forward
    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", lambda self, x, y: real(self, x, y) * float("nan"))
    cfg = tiny(tmp_path, cache_dir, max_nonfinite_steps=3, epochs=3, checkpoint_every_epochs=None, optimizer=optimizer)
    # SGD reads the flag every step and stops at once; fused AdamW skips on the device and the
    # trainer reads the streak when it logs (every 2 steps here), so it may run one step further
    streak = "3" if optimizer == "sgd" else "[34]"
    with pytest.raises(NonFiniteLossError, match=f"(?s){streak} optimizer steps in a row.*lower lr.*bf16"):
        train(cfg)
    # skipped steps add nothing to the logged loss: no log line has a NaN loss
    steps = _lines(cfg.output_dir, "step")
    assert steps and all(s["loss"] == 0 for s in steps)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_isolated_nonfinite_steps_are_skipped_and_counted(tmp_path, cache_dir, monkeypatch, optimizer):
    real = torch.nn.CrossEntropyLoss.forward
    calls = []

    def every_third_nan(self, x, y):
        calls.append(1)
        return real(self, x, y) * (float("nan") if len(calls) % 3 == 0 else 1.0)

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", every_third_nan)
    result = train(tiny(tmp_path, cache_dir, max_nonfinite_steps=2, epochs=2, optimizer=optimizer))
    assert result.stop_reason == "epochs" and result.global_steps == 12
    assert result.skipped_steps == 4  # steps 3, 6, 9, 12 (evaluation's loss is F.cross_entropy, not patched)
    weights, _ = read_weights(Path(result.run_dir) / "model" / "last.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    if optimizer == "adamw":  # the fused optimizer counted only the 8 real updates
        state = torch.load(Path(result.run_dir) / "checkpoints" / sorted(
            p.name for p in (Path(result.run_dir) / "checkpoints").iterdir())[-1] / "optimizer.bin",
            weights_only=False)
        assert {float(s["step"]) for s in state["state"].values()} == {8.0}


def test_stopping_rule_in_a_run(tmp_path, cache_dir):
    # lr so small that validation accuracy cannot improve after the first epoch
    cfg = tiny(tmp_path, cache_dir, epochs=6, min_epochs=2, early_stop_patience=1, lr=1e-12,
               optimizer="sgd", warmup_epochs=0, checkpoint_every_epochs=None, dropout=0.0, stochastic_depth=0.0)
    result = train(cfg)
    epochs = _lines(result.run_dir, "epoch")
    vals = [e["val_top1"] for e in epochs]
    # replay the rule over the logged validation accuracies: the run must stop exactly where it says
    expected, best, best_epoch = 6, -1.0, 0
    for i, v in enumerate(vals, start=1):
        if v > best:
            best, best_epoch = v, i
        if i < 6 and should_stop_early(i, best_epoch, min_epochs=2, patience=1):
            expected = i
            break
    assert expected < 6  # the rule did fire: this run tests stopping, not running to the end
    assert result.epochs_run == len(vals) == expected
    assert result.stopped_early == (expected < 6) and result.best_epoch == best_epoch
    assert result.stop_reason == ("early_stop" if expected < 6 else "epochs")


def test_max_steps_and_missing_resume_checkpoint(tmp_path, cache_dir):
    result = train(tiny(tmp_path, cache_dir, epochs=5, max_steps=2))
    assert result.global_steps == 2 and result.epochs_run == 1 and result.stop_reason == "max_steps"
    from effv2birds.training import CheckpointError

    with pytest.raises(CheckpointError, match="latest"):
        train(tiny(tmp_path, cache_dir, name="other", resume=str(tmp_path / "nope")))


def test_linear_probe_trains_only_the_head(tmp_path, cache_dir):
    first = train(tiny(tmp_path, cache_dir, name="backbone", max_steps=1))
    weights = Path(first.run_dir) / "model" / "last.safetensors"
    probe = train(tiny(tmp_path, cache_dir, name="probe", weights=str(weights), freeze_backbone=True, lr=0.05,
                       max_steps=3))
    before, _ = read_weights(weights)
    after, _ = read_weights(Path(probe.run_dir) / "model" / "last.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # only the classifier moved: backbone weights *and* BatchNorm running statistics are untouched
    assert changed and all(k.startswith("classifier.") for k in changed), sorted(changed)


def test_ema_is_evaluated_with_batchnorm_statistics_of_its_own_weights(tmp_path, cache_dir):
    from accelerate import Accelerator

    from effv2birds.preprocessing import Preprocessing
    from effv2birds.training import recompute_bn_statistics
    from effv2birds.training.batchnorm import sample_images
    from effv2birds.training.setup import load_data

    cfg = tiny(tmp_path, cache_dir, epochs=2, ema_decay=0.9, ema_bn_images=20)
    run = Path(train(cfg).run_dir)
    saved, _ = read_weights(run / "model" / "last.safetensors")
    raw, _ = read_weights(sorted((run / "checkpoints").glob("step-*"))[-1] / "model.safetensors")
    stats = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.equal(saved[k], raw[k]) for k in stats)  # not the model's, copied
    # the same measurement by hand: the EMA weights on 20 train photos, as evaluation preprocesses them
    splits, _, _ = load_data(cfg, Accelerator(cpu=True), [cfg.image_size])
    photos = sample_images(splits["train"][cfg.image_size].images, max_images=20, batch_size=cfg.eval_batch,
                           seed=cfg.seed)
    model = load_trained(run, "last", device="cpu").model
    pre = Preprocessing.from_config(cfg)
    assert recompute_bn_statistics(model, (pre.to_model_input(b) for b in photos)) == 20
    mine = model.state_dict()
    for k in stats:
        torch.testing.assert_close(saved[k], mine[k], rtol=1e-3, atol=1e-5)


def test_bn_momentum_sets_how_far_a_step_moves_the_running_statistics(tmp_path, cache_dir):
    stem = "features.0.1.running_mean"  # torchvision's stem BatchNorm: the same input in both runs
    means = {}
    for momentum in (None, 0.01):
        result = train(tiny(tmp_path, cache_dir, name=f"bn-{momentum}", max_steps=1, bn_momentum=momentum))
        means[momentum] = read_weights(Path(result.run_dir) / "model" / "last.safetensors")[0][stem]
    # from running_mean = 0, one step leaves momentum * batch mean: 0.01 moves a tenth of the default 0.1
    assert means[None].abs().max() > 0
    torch.testing.assert_close(means[0.01], 0.1 * means[None], rtol=1e-4, atol=1e-7)


def test_progressive_learning_grows_image_size_and_regularization(tmp_path, cache_dir, monkeypatch):
    import effv2birds.models
    from effv2birds.config import ProgressiveConfig

    calls = []
    real = effv2birds.models.set_regularization

    def spy(model, **kw):
        calls.append(kw)
        return real(model, **kw)

    monkeypatch.setattr(effv2birds.models, "set_regularization", spy)

    prog = ProgressiveConfig(stages=2, size_start=24, size_end=32, randaug_start=2, randaug_end=8,
                             dropout_start=0.1, dropout_end=0.3)
    result = train(tiny(tmp_path, cache_dir, epochs=2, auto_augment="randaugment", progressive=prog))
    epochs = _lines(result.run_dir, "epoch")
    assert [e["image_size"] for e in epochs] == [24, 32]
    assert all(math.isfinite(e["train_loss"]) for e in epochs)
    meta = json.loads((Path(result.run_dir) / "model" / "best.json").read_text())
    assert meta["preprocessing"]["image_size"] == 32  # evaluated at the final size
    assert [round(c["dropout"], 6) for c in calls] == [0.1, 0.3]  # dropout grows stage by stage


class _HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops that make the host wait for the device on a GPU (.item(), bool(), masks)."""

    OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.masked_select"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += str(func.overloadpacket) in self.OPS
        return func(*args, **(kwargs or {}))


def test_training_steps_do_not_wait_for_the_device(tmp_path, cache_dir):
    # the same run for 4 and for 12 optimizer steps: any host read inside the step (like .item()
    # on the loss) would make the second count larger; reads at start, evaluation and end are equal
    counts = []
    for steps in (4, 12):
        cfg = tiny(tmp_path, cache_dir, name=f"run{steps}", synthetic_size=120, max_samples=120, max_steps=steps,
                   log_every_steps=100, checkpoint_every_epochs=None)
        with _HostReads() as reads:
            train(cfg)
        counts.append(reads.count)
    assert counts[0] == counts[1] > 0


def test_mixed_precision_auto(monkeypatch):
    from effv2birds.training.setup import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    assert resolve_mixed_precision(TrainConfig()) == ("bf16" if gpu else "no")
    assert resolve_mixed_precision(TrainConfig(cpu=True)) == "no"
    assert resolve_mixed_precision(TrainConfig(mixed_precision="bf16")) == "bf16"  # explicit wins
    # accelerate launch --mixed_precision bf16/fp16 is a choice; its default "no" is not
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert resolve_mixed_precision(TrainConfig(cpu=True)) == "bf16"
    assert resolve_mixed_precision(TrainConfig(mixed_precision="no")) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_mixed_precision(TrainConfig(cpu=True)) == "no"  # fp16 needs a GPU
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_mixed_precision(TrainConfig()) == ("bf16" if gpu else "no")


@pytest.mark.parametrize("machine, capability, warned", [("x86_64", "AVX2", True), ("AMD64", "DEFAULT", True),
                                                        ("x86_64", "AVX512", False), ("aarch64", "DEFAULT", False)])
def test_bf16_on_a_cpu_without_bf16_instructions_warns_with_the_fix(monkeypatch, tmp_path, cache_dir, machine,
                                                                   capability, warned):
    import platform

    from effv2birds.training.setup import cpu_bf16_warning

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    message = cpu_bf16_warning("bf16", torch.device("cpu"))
    assert (message is not None) == warned
    assert cpu_bf16_warning("no", torch.device("cpu")) is None
    assert cpu_bf16_warning("bf16", torch.device("cuda")) is None
    if warned:
        assert capability in message and "--mixed-precision no" in message
        with pytest.warns(UserWarning, match="no bf16 instructions.*--mixed-precision no"):
            train(tiny(tmp_path, cache_dir, mixed_precision="bf16", max_steps=1))
