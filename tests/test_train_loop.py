"""The training loop's parts: the NaN/inf guard, the checkpointed counters, resolving a resume once."""

import math
import warnings

import pytest
import torch

from effv2birds import TrainConfig
from effv2birds.training import list_checkpoints, train
from effv2birds.training.nonfinite import NonFiniteGuard, NonFiniteLossError
from effv2birds.training.trainer import _Counters

# the keys of _Counters.state_dict() as checkpoints written before NonFiniteGuard existed hold them
OLD_COUNTER_KEYS = ["epoch", "batch_in_epoch", "global_step", "best_val_top1", "best_epoch", "best_val", "best_step",
                    "train_time_s", "images_seen", "sums", "nonfinite"]


def _identity_reduce(tensor, reduction):
    return tensor


def _steps(guard, losses):
    """Feed one loss per optimizer step; returns may_step of each."""
    taken = []
    for loss in losses:
        guard.observe(torch.tensor(loss))
        taken.append(guard.may_step(guard.end_step(_identity_reduce)))
    return taken


def _sgd():
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)


def test_guard_counts_streaks_and_skips_on_the_host_for_sgd():
    guard = NonFiniteGuard(_sgd(), max_streak=3)
    assert not guard.on_device
    nan, inf = float("nan"), float("inf")
    assert _steps(guard, [nan, 1.0, inf, inf, 2.0]) == [False, True, False, False, True]
    assert guard.counts.tolist() == [0.0, 2.0, 3.0]  # streak, longest streak, total
    assert guard.skipped == 3 and not guard.should_stop()
    _steps(guard, [nan, nan, nan])
    assert guard.should_stop() and guard.should_stop(7, read_every=5)  # on the host: read every step


def test_guard_on_device_reads_only_every_read_every_steps():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p], lr=0.1, fused=True)
    guard = NonFiniteGuard(opt, max_streak=2)
    for _ in range(3):
        guard.observe(torch.tensor(float("nan")))
        p.grad = torch.full((2,), float("nan"))
        bad = guard.end_step(_identity_reduce)
        assert guard.may_step(bad)  # always stepped: the update is skipped on the device
        with guard.skip_if(bad):
            opt.step()
    assert p.tolist() == [1.0, 1.0] and opt.state[p]["step"].item() == 0
    assert guard.on_device and not guard.should_stop(3, read_every=2) and guard.should_stop(4, read_every=2)
    assert guard.should_stop()


def test_guard_decides_how_to_skip_after_a_resume_restored_the_optimizer():
    # a checkpoint of a non-fused AdamW loaded into a fused one: load_state_dict brings fused=None back
    p = torch.nn.Parameter(torch.ones(2))
    fused = torch.optim.AdamW([p], lr=0.1, fused=True)
    guard = NonFiniteGuard(fused, max_streak=2)
    fused.load_state_dict(torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1).state_dict())
    assert not guard.on_device


def test_guard_error_message_says_what_to_try():
    guard = NonFiniteGuard(_sgd(), max_streak=2)
    _steps(guard, [float("nan")] * 2)
    err = guard.error(step=12, lr=0.002, checkpoints="runs/x/checkpoints")
    assert isinstance(err, NonFiniteLossError) and isinstance(err, RuntimeError)
    assert str(err) == (
        "the loss was NaN or infinite for 2 optimizer steps in a row (step 12; max_nonfinite_steps=2); those steps "
        "were skipped and the run stopped. Try a lower lr (now 0.002), grad_clip=1.0, mixed_precision='bf16' "
        "instead of 'fp16', or check the data. Checkpoints so far are in runs/x/checkpoints."
    )


def test_counters_keep_the_checkpoint_format_of_earlier_versions():
    guard = NonFiniteGuard(_sgd(), max_streak=2)
    state = _Counters(torch.device("cpu"), guard)
    assert list(state.state_dict()) == OLD_COUNTER_KEYS
    # what the counters of a run saved before the guard existed held
    old = {"epoch": 2, "batch_in_epoch": 3, "global_step": 15, "best_val_top1": 0.5, "best_epoch": 2,
           "best_val": {"top1": 0.5}, "best_step": 12, "train_time_s": 9.5, "images_seen": 120,
           "sums": torch.tensor([1.5, 7.0, 24.0], dtype=torch.float64),
           "nonfinite": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}
    state.load_state_dict(old)
    assert (state.epoch, state.batch_in_epoch, state.global_step, state.best_step) == (2, 3, 15, 12)
    assert state.best_val == {"top1": 0.5} and state.images_seen == 120 and state.train_time_s == 9.5
    assert state.sums.tolist() == [1.5, 7.0, 24.0] and guard.counts.tolist() == [1.0, 2.0, 3.0]
    assert guard.skipped == 3 and guard.should_stop()
    again = state.state_dict()
    assert all(torch.equal(again[k], old[k]) if torch.is_tensor(old[k]) else again[k] == old[k] for k in old)
    # the guard keeps counting on the loaded tensor (the streak continues)
    _steps(guard, [float("nan")])
    assert state.state_dict()["nonfinite"].tolist() == [2.0, 2.0, 4.0]


def test_a_corrupt_newest_checkpoint_is_reported_once(tmp_path, one_thread):
    """The checkpoint to resume from is resolved once per run, so its warning appears once."""
    cfg = TrainConfig(data="synthetic", synthetic_size=24, max_samples=24, image_size=32, batch_size=8, epochs=1,
                      width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True,
                      cache_dir=str(tmp_path / "cache"), checkpoint_every_steps=1, checkpoint_every_epochs=None,
                      output_dir=str(tmp_path / "run"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="model input of 32 px")
        first = train(cfg)
    newest = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    weights = next(newest.rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp_path / "run" / "metrics.json").unlink()  # as if killed after that checkpoint
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = train(cfg.replace(resume="latest"))
    about = [w for w in caught if "cannot be loaded" in str(w.message)]
    assert len(about) == 1 and newest.name in str(about[0].message)
    assert first.global_steps >= 2 and resumed.global_steps == first.global_steps
    assert math.isfinite(resumed.best_val_top1)


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_reset_accelerator_state_lets_each_run_choose_its_own_accumulation(grad_accum):
    from accelerate import Accelerator

    from effv2birds.training.setup import reset_accelerator_state

    reset_accelerator_state()
    assert Accelerator(cpu=True, gradient_accumulation_steps=grad_accum).gradient_accumulation_steps == grad_accum
    reset_accelerator_state()


def test_a_launch_accelerate_does_not_join_is_refused_by_train_and_evaluate(monkeypatch, tmp_path):
    # e.g. `torchrun --nproc_per_node 2` without GPUs and without --cpu: each process would run alone
    from effv2birds.config import ConfigError
    from effv2birds.training import evaluate_run

    monkeypatch.setenv("WORLD_SIZE", "2")
    if torch.cuda.is_available():
        pytest.skip("with GPUs accelerate joins the processes itself")
    cfg = TrainConfig(synthetic_size=16, max_samples=16, image_size=16, epochs=1, progress_bar=False,
                      log_with="none", cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    for call in (lambda: train(cfg), lambda: evaluate_run(tmp_path / "no-run", tmp_path)):
        with pytest.raises(ConfigError, match="2 processes were launched but accelerate runs 1.*--cpu"):
            call()
