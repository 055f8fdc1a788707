"""Two processes (a real gloo group on CPU) give the same validation metrics and sample count as one."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from effv2birds import TrainConfig
from effv2birds.training import train

pytestmark = pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning")

# Each rank checks that it really is one of 2 processes (a plain Accelerator() under torchrun on a
# machine without GPU would silently run 2 independent single-process jobs), trains, then evaluates
# the weights of the single-process run on the validation split.
WORKER = '''
import json, sys
import torch
torch.set_num_threads(1)
from accelerate import Accelerator, PartialState
from effv2birds import TrainConfig
from effv2birds.data import cache_split, load_image_dataset, make_loader
from effv2birds.training import evaluate_model, load_trained, train

cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
out, single_run = sys.argv[2], sys.argv[3]
state = PartialState(cpu=True)
assert state.num_processes == 2, f"world size is {state.num_processes}, not 2"
assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 2
result = train(cfg)
assert result.world_size == 2
accelerator = Accelerator(cpu=True)
pred = load_trained(single_run, device="cpu")
ds = load_image_dataset(cfg.data, max_samples=cfg.max_samples, synthetic_size=cfg.synthetic_size, seed=cfg.seed,
                        val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
val = cache_split(ds["validation"], cfg.eval_size, cache_dir=cfg.cache_dir)
model, loader = accelerator.prepare(pred.model, make_loader(val, cfg.batch_size, shuffle=False))
p = pred.preprocessing
metrics = evaluate_model(model, loader, accelerator, mean=p["mean"], std=p["std"], normalize=p["normalize"],
                         channels_last=False, num_classes=len(pred.class_names))
with open(f"{out}/rank{accelerator.process_index}.json", "w") as f:
    json.dump({"world_size": torch.distributed.get_world_size(), "train": result.to_dict(), "eval": metrics}, f)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one(tmp_path):
    torch.set_num_threads(1)
    # 45 validation images, batch 4 x 2 processes: the last batch is padded by accelerate, and
    # gather_for_metrics must drop the padding
    base = dict(data="synthetic", synthetic_size=60, max_samples=45, image_size=32, batch_size=4, epochs=1,
                max_steps=2, width_multiplier=0.25, depth_multiplier=0.1, progress_bar=False, log_with="none",
                cpu=True, cache_dir=str(tmp_path / "cache"), sync_bn=True)
    single = train(TrainConfig(**base, output_dir=str(tmp_path / "single")))
    assert single.val["num_samples"] % 8 != 0

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(script), json.dumps(dict(base, output_dir=str(tmp_path / "two"))),
           str(tmp_path), str(tmp_path / "single")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["eval"] == ranks[1]["eval"]  # every process computes the same numbers
    two = ranks[0]["eval"]
    one = single.val
    assert two["num_samples"] == one["num_samples"]  # no duplicated padding samples
    for key in ("top1", "top5", "macro_f1", "per_class_accuracy", "confusion_matrix"):
        assert two[key] == one[key], key
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    # the 2-process training run itself evaluated every validation image exactly once
    assert ranks[0]["train"]["val"]["num_samples"] == one["num_samples"]
    assert json.loads((tmp_path / "two" / "environment.json").read_text())["world_size"] == 2
