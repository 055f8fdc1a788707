"""Checkpoints are atomic and resume is exact: kill -9 while saving, resume, get identical weights."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from effv2birds import TrainConfig
from effv2birds.training import list_checkpoints, train

pytestmark = pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning")

# Runs train() and SIGKILLs its own process right after accelerate has written the files of the
# checkpoint at step KILL_STEP, before the atomic rename: the worst moment for a crash.
KILLER = '''
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from accelerate import Accelerator
from effv2birds import TrainConfig
from effv2birds.training import train

cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
kill_dir = ".tmp-step-%08d" % int(sys.argv[2])
original = Accelerator.save_state

def save_state(self, output_dir=None, **kw):
    out = original(self, output_dir, **kw)
    if output_dir and os.path.basename(output_dir) == kill_dir:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

Accelerator.save_state = save_state
train(cfg)
'''


# the EMA case: its weights are restored and its BatchNorm statistics measured again (the same photos)
@pytest.mark.parametrize("accum, ema_decay", [(1, None), (2, 0.9)], ids=["no-accum", "accum2-ema"])
def test_kill_during_checkpoint_then_resume_is_bit_identical(tmp_path, accum, ema_decay):
    torch.set_num_threads(1)
    base = dict(data="synthetic", synthetic_size=48, max_samples=48, image_size=32, batch_size=8 // accum,
                grad_accum_steps=accum, ema_decay=ema_decay, ema_bn_images=16 if ema_decay else TrainConfig.ema_bn_images,
                epochs=2, width_multiplier=0.25, depth_multiplier=0.1,
                progress_bar=False, log_with="none", cpu=True, cache_dir=str(tmp_path / "cache"),
                log_every_steps=2, checkpoint_every_steps=2, checkpoint_every_epochs=None, keep_last=3)
    whole = train(TrainConfig(**base, output_dir=str(tmp_path / "whole")))

    cfg = dict(base, output_dir=str(tmp_path / "killed"))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    # step 4 is mid-epoch (6 optimizer steps per epoch without accumulation, 6 with it: 12 half batches)
    proc = subprocess.run([sys.executable, str(script), json.dumps(cfg), "4"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpt_root = tmp_path / "killed" / "checkpoints"
    assert (ckpt_root / ".tmp-step-00000004").is_dir()  # the interrupted save is there, incomplete...
    assert [p.name for p in list_checkpoints(ckpt_root)] == ["step-00000002"]  # ...and ignored
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = train(TrainConfig(**cfg, resume="latest"))
    a = load_file(tmp_path / "whole" / "model" / "last.safetensors")
    b = load_file(tmp_path / "killed" / "model" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert resumed.val == whole.val and resumed.test == whole.test
    assert resumed.global_steps == whole.global_steps and resumed.best_epoch == whole.best_epoch

    def lines(run):
        drop = ("images_per_s", "time_s", "elapsed_s")
        rows = (json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines())
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    assert lines("killed") == lines("whole")  # same losses, accuracies and lrs, no duplicated lines


def test_resume_from_an_explicit_checkpoint_path_and_pruning(tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig(data="synthetic", synthetic_size=48, max_samples=48, image_size=32, batch_size=8, epochs=1,
                      width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True,
                      cache_dir=str(tmp_path / "cache"), checkpoint_every_steps=1, keep_last=2,
                      output_dir=str(tmp_path / "run"))
    first = train(cfg)
    names = [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")]
    assert len(names) <= 3 and names[-1] == f"step-{first.global_steps:08d}"  # last 2 + the best
    # resuming a finished run from its last checkpoint trains nothing more and changes nothing
    again = train(cfg.replace(resume=str(tmp_path / "run" / "checkpoints" / names[-1])))
    assert again.global_steps == first.global_steps and again.val == first.val


def test_resume_refuses_a_changed_config(tmp_path):
    from effv2birds import ConfigError

    torch.set_num_threads(1)
    cfg = TrainConfig(data="synthetic", synthetic_size=48, max_samples=48, image_size=32, batch_size=8, epochs=1,
                      max_steps=1, warmup_epochs=0, width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False,
                      log_with="none", cpu=True, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))
    train(cfg)
    with pytest.raises(ConfigError, match=r"changed: lr \(0.002 -> 0.1\)"):
        train(cfg.replace(resume="latest", lr=0.1))
    # changing only the budget is fine: the run continues (a max_steps stop counts as a finished epoch)
    more = train(cfg.replace(resume="latest", epochs=2, max_steps=3, log_every_steps=1))
    assert more.global_steps == 3 and more.epochs_run == 2
    # the cosine schedule stretched to the new budget (it had reached 0 at the old one, step 1)
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
           if r["kind"] == "step"}
    assert lrs[2] > 0 and lrs[3] == 0
    same = train(cfg.replace(resume="latest", epochs=3, max_steps=3))  # budget spent: nothing more to do
    assert same.global_steps == 3 and same.epochs_run == 2


def test_corrupt_newest_checkpoint_falls_back_to_the_one_before_with_a_warning(tmp_path, one_thread):
    """A truncated ``model.safetensors`` in the newest checkpoint (a full disk, a copy cut short): resume
    'latest' warns naming it and continues from the newest loadable one, bit-identical to a clean run."""
    from effv2birds.training import CheckpointError, resolve_resume

    base = dict(data="synthetic", synthetic_size=48, max_samples=48, image_size=32, batch_size=8, epochs=2,
                width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True,
                cache_dir=str(tmp_path / "cache"), checkpoint_every_steps=2, checkpoint_every_epochs=None,
                keep_last=3)
    whole = train(TrainConfig(**base, output_dir=str(tmp_path / "whole")))
    cut = dict(base, output_dir=str(tmp_path / "cut"))
    train(TrainConfig(**cut, max_steps=6))
    ckpts = list_checkpoints(tmp_path / "cut" / "checkpoints")
    assert [p.name for p in ckpts][-2:] == ["step-00000004", "step-00000006"]
    weights = next(ckpts[-1].rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp_path / "cut" / "metrics.json").unlink()  # as if killed after that checkpoint
    with pytest.warns(UserWarning, match="step-00000006.*model.safetensors is truncated"):
        assert resolve_resume("latest", tmp_path / "cut") == ckpts[-2]
    with pytest.warns(UserWarning, match="step-00000006"):
        resumed = train(TrainConfig(**cut, resume="latest"))
    assert resumed.global_steps == whole.global_steps
    a = load_file(str(tmp_path / "whole" / "model" / "last.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for p in list_checkpoints(tmp_path / "cut" / "checkpoints"):  # every checkpoint corrupt: a clear error
        w = next(p.rglob("model.safetensors"))
        w.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="can be loaded"), pytest.warns(UserWarning):
        resolve_resume("latest", tmp_path / "cut")


def test_relative_absolute_and_moved_run_dirs_are_the_same_run(tmp_path, monkeypatch, one_thread):
    base = dict(data="synthetic", synthetic_size=32, max_samples=32, image_size=32, batch_size=8,
                width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none", cpu=True,
                cache_dir=str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(**base, output_dir="runs/x", epochs=1))
    resumed = train(TrainConfig(**base, output_dir=str(tmp_path / "runs" / "x"), epochs=2, resume="latest"))
    assert resumed.epochs_run == 2
    (tmp_path / "runs" / "x").rename(tmp_path / "moved")
    moved = train(TrainConfig(**base, output_dir=str(tmp_path / "moved"), epochs=3, resume="latest"))
    assert moved.epochs_run == 3 and moved.run_dir == tmp_path / "moved"
    env = json.loads((tmp_path / "moved" / "environment.json").read_text())
    assert env["effv2birds"]["effv2birds"] and "git_commit" in env["effv2birds"]
