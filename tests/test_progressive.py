"""Progressive learning (EfficientNetV2 Sec. 4): the schedule, a real run across stages, resume mid-stage."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from effv2birds.config import PROGRESSIVE_PRESETS, ProgressiveConfig, TrainConfig
from effv2birds.progressive import schedule_table, stage_of_epoch, stage_settings
from effv2birds.training.checkpoint import STATE_FILE

pytestmark = [
    pytest.mark.filterwarnings("ignore:model input of .* px:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

TINY = dict(data="synthetic", synthetic_size=60, max_samples=30, batch_size=8, width_multiplier=0.25,
            depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True, warmup_epochs=0.0,
            auto_augment="randaugment", checkpoint_every_epochs=None)
# 3 stages over 5 epochs: stages 0,0,1,1,2 (stage = epoch * M // E)
PROG = ProgressiveConfig(stages=3, size_start=24, size_end=40, randaug_start=2, randaug_end=10,
                         mixup_start=0.0, mixup_end=0.4, dropout_start=0.1, dropout_end=0.3,
                         stochastic_depth_start=0.0, stochastic_depth_end=0.2, eval_size=40)


def _expected(prog: ProgressiveConfig, epoch: int, epochs: int) -> dict:
    """The paper's rule written out on its own: equal stages, linear from start to end."""
    m = prog.stages
    i = min(m - 1, math.floor(epoch * m / epochs))
    lerp = lambda a, b: a + (b - a) * i / (m - 1)  # noqa: E731
    return dict(stage=i, image_size=int(lerp(prog.size_start, prog.size_end)),
                randaug_magnitude=lerp(prog.randaug_start, prog.randaug_end),
                mixup_alpha=lerp(prog.mixup_start, prog.mixup_end), dropout=lerp(prog.dropout_start, prog.dropout_end))


@pytest.mark.parametrize("preset,changes", [("paper-s", {}), ("low-res", {}),
                                            ("paper-s", dict(randaug_end=10, dropout_end=0.2))],
                         ids=["paper-s", "low-res", "paper-s-released-code"])
@pytest.mark.parametrize("epochs", [350, 10, 7])
def test_schedule_matches_the_formula_every_epoch(preset, changes, epochs):
    prog = ProgressiveConfig.from_preset(preset, **changes)
    cfg = TrainConfig(epochs=epochs, progressive=prog)
    table = schedule_table(cfg)
    assert [row["epoch"] for row in table] == list(range(1, epochs + 1))
    for e, row in enumerate(table):
        want = _expected(prog, e, epochs)
        for key, value in want.items():
            assert row[key] == pytest.approx(value), (e, key)
    # stages are contiguous, in order, and as equal in length as whole epochs allow
    stages = [row["stage"] for row in table]
    assert stages == sorted(stages) and set(stages) == set(range(prog.stages))
    lengths = [stages.count(s) for s in range(prog.stages)]
    assert max(lengths) - min(lengths) <= 1
    assert table[0]["image_size"] == prog.size_start and table[-1]["image_size"] == prog.size_end
    assert table[0]["dropout"] == pytest.approx(prog.dropout_start)
    assert table[-1]["dropout"] == pytest.approx(prog.dropout_end)


def test_paper_s_numbers():
    """Table 6 of the paper for EfficientNetV2-S (350 epochs, 4 stages, evaluated at 384)."""
    assert PROGRESSIVE_PRESETS["paper-s"]["stages"] == 4
    cfg = TrainConfig(epochs=350, image_size=300, progressive=ProgressiveConfig.from_preset("paper-s"))
    first, last = stage_settings(cfg, 0), stage_settings(cfg, 349)
    assert (first.image_size, first.randaug_magnitude, first.mixup_alpha) == (128, 5.0, 0.0)
    assert (last.image_size, last.randaug_magnitude, last.mixup_alpha) == (300, 15.0, 0.0)
    assert first.dropout == pytest.approx(0.1) and last.dropout == pytest.approx(0.3)
    assert cfg.eval_size == 384
    # stage boundaries of 350 epochs in 4 stages: 88 + 87 + 88 + 87 epochs
    starts = [e for e in range(350) if e == 0 or stage_of_epoch(e, 350, 4) != stage_of_epoch(e - 1, 350, 4)]
    assert starts == [0, 88, 175, 263]


def test_off_means_the_configs_own_values():
    cfg = TrainConfig(epochs=3, image_size=64, randaug_magnitude=7.0, mixup_alpha=0.2, dropout=0.25)
    assert {(s["image_size"], s["randaug_magnitude"], s["mixup_alpha"], s["dropout"])
            for s in schedule_table(cfg)} == {(64, 7.0, 0.2, 0.25)}


class _Spy:
    """Records what the trainer really did: batch sizes seen by the augmentation, regularization set."""

    def __init__(self, monkeypatch):
        import effv2birds.data
        import effv2birds.models

        self.shapes, self.regs = [], []
        real_reg, real_aug = effv2birds.models.set_regularization, effv2birds.data.BatchAugment
        spy = self

        def set_regularization(model, **kw):
            real_reg(model, **kw)
            drop = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
            depth = [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"]
            spy.regs.append(dict(kw, model_dropout=drop, model_max_drop_path=max(depth)))

        class BatchAugment(real_aug):
            def forward(self, images, labels):
                out = super().forward(images, labels)
                spy.shapes.append((tuple(images.shape[-2:]), tuple(out[0].shape[-2:]), self.randaug_magnitude,
                                   self.mixup_alpha))
                return out

        monkeypatch.setattr(effv2birds.models, "set_regularization", set_regularization)
        monkeypatch.setattr(effv2birds.data, "BatchAugment", BatchAugment)


def _epochs(run_dir):
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "epoch"]


def test_a_run_changes_resolution_and_regularization_at_stage_boundaries(tmp_path, monkeypatch):
    from effv2birds.training import train

    spy = _Spy(monkeypatch)
    cache = tmp_path / "cache"
    cfg = TrainConfig(**TINY, epochs=5, image_size=40, progressive=PROG, cache_dir=str(cache),
                      output_dir=str(tmp_path / "run"))
    result = train(cfg)
    records = _epochs(result.run_dir)
    want = schedule_table(cfg)
    keys = ("stage", "image_size", "randaug_magnitude", "mixup_alpha", "dropout", "stochastic_depth")
    assert [{k: r[k] for k in keys} for r in records] == [{k: w[k] for k in keys} for w in want]
    assert [r["stage"] for r in records] == [0, 0, 1, 1, 2]
    assert [r["image_size"] for r in records] == [24, 24, 32, 32, 40]
    # the model really trained at each size: batches arrive pre-resized, no on-device resize
    steps = len(spy.shapes) // 5
    seen = [spy.shapes[i * steps][0] for i in range(5)]
    assert seen == [(s, s) for s in (24, 24, 32, 32, 40)]
    assert all(inp == out for inp, out, *_ in spy.shapes)
    assert [(m, a) for _, _, m, a in spy.shapes[::steps]] == [(2.0, 0.0), (2.0, 0.0), (6.0, 0.2), (6.0, 0.2),
                                                              (10.0, 0.4)]
    # ... and the model's dropout / drop-path modules were changed, once per epoch
    assert [round(r["model_dropout"][0], 6) for r in spy.regs] == [0.1, 0.1, 0.2, 0.2, 0.3]
    assert [r["stochastic_depth"] for r in spy.regs] == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.2])
    drop_path = [r["model_max_drop_path"] for r in spy.regs]  # the deepest block's rate: sd * (n-1)/n
    assert drop_path[0] == drop_path[1] == 0.0 and drop_path[2] > 0
    assert drop_path[4] == pytest.approx(2 * drop_path[2])
    assert result.test is not None and all(math.isfinite(r["train_loss"]) for r in records)
    meta = json.loads((Path(result.run_dir) / "model" / "best.json").read_text())
    assert meta["preprocessing"]["image_size"] == 40  # evaluated at eval_size
    # one train cache per stage size (+ validation, test at 40), reused by a second run
    entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if not p.name.startswith(".")}
    assert len(entries) == 5
    assert json.loads((Path(result.run_dir) / "data_report.json").read_text())["train_cache_sizes"] == [24, 32, 40]
    fixed = train(cfg.replace(output_dir=str(tmp_path / "again"), max_steps=1))
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if not p.name.startswith(".")} == entries

    # the report plots the recorded schedule and sets accuracy and time side by side
    from effv2birds.study import write_report
    from effv2birds.study.experiments import PlannedRun

    runs = [PlannedRun("progressive", "fixed", cfg.replace(output_dir=str(fixed.run_dir))),
            PlannedRun("progressive", "progressive", cfg)]
    write_report(tmp_path / "report", runs)
    assert (tmp_path / "report" / "progressive_schedule.png").stat().st_size > 0
    text = (tmp_path / "report" / "report.md").read_text()
    prog_top1, fixed_top1 = round(100 * result.test["top1"], 2), round(100 * fixed.test["top1"], 2)
    assert f"test top-1 {prog_top1:.2f} vs {fixed_top1:.2f}" in text
    assert "train time" in text and "progressive_schedule.png" in text


class _Crash(Exception):
    pass


def test_resume_mid_stage_continues_the_schedule_bit_identically(tmp_path, monkeypatch):
    import effv2birds.training.trainer as trainer_mod
    from effv2birds.training import train

    # 2 stages over 4 epochs of 3 steps (24 train images, batch 8): stage 1 = steps 7..12
    prog = ProgressiveConfig(stages=2, size_start=24, size_end=32, randaug_start=2, randaug_end=8,
                             dropout_start=0.1, dropout_end=0.3, stochastic_depth_start=0.0,
                             stochastic_depth_end=0.2)
    base = dict(TINY, epochs=4, image_size=32, progressive=prog, cache_dir=str(tmp_path / "cache"),
                checkpoint_every_steps=4, keep_last=5, log_every_steps=1)
    whole = train(TrainConfig(**base, output_dir=str(tmp_path / "whole")))
    assert whole.global_steps == 12

    real_save = trainer_mod.save_checkpoint

    def save_then_crash(accelerator, root, step, summary):
        real_save(accelerator, root, step, summary)
        if step == 8:  # epoch 3 (stage 1), two of its three batches done
            raise _Crash

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_crash)
    cfg = TrainConfig(**base, output_dir=str(tmp_path / "crashed"))
    with pytest.raises(_Crash):
        train(cfg)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    summary = json.loads((tmp_path / "crashed" / "checkpoints" / "step-00000008" / STATE_FILE).read_text())
    assert (summary["epoch"], summary["batch_in_epoch"]) == (2, 2)  # mid-stage, mid-epoch

    spy = _Spy(monkeypatch)
    resumed = train(cfg.replace(resume="latest"))
    # the resumed process went straight to stage 1: its size, its regularization
    assert {shape[0] for shape in spy.shapes} == {(32, 32)}
    assert len(spy.shapes) == 4  # the last batch of epoch 3, then epoch 4
    assert [round(r["dropout"], 6) for r in spy.regs] == [0.3, 0.3]
    assert [round(r["model_dropout"][0], 6) for r in spy.regs] == [0.3, 0.3]

    a = load_file(tmp_path / "whole" / "model" / "last.safetensors")
    b = load_file(tmp_path / "crashed" / "model" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    assert resumed.val == whole.val and resumed.test == whole.test

    def lines(run):
        rows = (json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines())
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "time_s", "elapsed_s")} for r in rows]

    assert lines("crashed") == lines("whole")
    # an epoch whose last step wrote a checkpoint still reports its training speed
    epochs = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["images_per_s"] > 0 for r in epochs if r["kind"] == "epoch")
    assert [r["image_size"] for r in _epochs(tmp_path / "crashed")] == [24, 24, 32, 32]


def test_compile_recompiles_once_per_stage_within_the_limit(tmp_path, monkeypatch):
    """--compile with progressive learning: dynamo's guards on the input size and dropout rates fail
    at each stage boundary; the trainer raises the recompile limit so that no stage falls back to eager.
    A recording backend stands in for inductor (same dynamo guards, no C++ compiler needed)."""
    import torch._dynamo as dynamo

    from effv2birds.training import train

    import timm.optim  # noqa: F401 - on import it sets the limit to 1_000_000 (timm/optim/kron.py)

    monkeypatch.setattr(dynamo.config, "recompile_limit", 3)  # lower than 2 graphs x 3 stages; restored after
    graphs = []

    def record(gm, example_inputs):
        graphs.append({tuple(t.shape[-2:]) for t in example_inputs
                       if isinstance(t, torch.Tensor) and t.ndim == 4 and t.shape[1] == 3})
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=record))
    dynamo.reset()
    prog = ProgressiveConfig(stages=3, size_start=24, size_end=40, dropout_start=0.1, dropout_end=0.3)
    cfg = TrainConfig(**dict(TINY, auto_augment="none"), epochs=3, image_size=40, progressive=prog, compile=True,
                      cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    try:
        result = train(cfg)
    finally:
        dynamo.reset()
    assert dynamo.config.recompile_limit >= 2 * prog.stages + 2
    # every stage's training size went through a compiled graph (none fell back to eager)
    seen = set().union(*graphs)
    assert {(24, 24), (32, 32), (40, 40)} <= seen, seen
    # a train and an eval graph per stage: more than the old limit of 3 would have allowed
    assert 3 < len(graphs) <= 2 * prog.stages + 2, len(graphs)
    assert [r["image_size"] for r in _epochs(result.run_dir)] == [24, 32, 40]
