"""--log-with: every tracker accelerate supports, a clear error before any data when its package is
missing, and real offline runs that write their metrics to TensorBoard, trackio and MLflow."""

import json
import sys
import typing
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.filterwarnings("ignore:model input of 32 px:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

from effv2birds import ConfigError, TrainConfig
from effv2birds.cli import main
from effv2birds.config import Tracker
from effv2birds.training import train
from effv2birds.training.setup import TRACKER_PACKAGES

TINY = dict(data="synthetic", synthetic_size=60, max_samples=25, width_multiplier=0.25, depth_multiplier=0.1,
            max_steps=2, image_size=32, batch_size=8, progress_bar=False, cpu=True, log_every_steps=1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def _run(tmp_path, cache_dir, tracker):
    result = train(TrainConfig(**TINY, log_with=tracker, cache_dir=cache_dir, output_dir=str(tmp_path / "run")))
    lines = [json.loads(x) for x in (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in lines if r["kind"] == "step"}
    epoch = next(r for r in lines if r["kind"] == "epoch")
    assert sorted(steps) == [1, 2]
    return result, steps, epoch


def test_log_with_offers_every_accelerate_tracker():
    from accelerate.utils import LoggerType

    ours = set(typing.get_args(Tracker)) - {"auto", "none"}
    assert ours == set(LoggerType.list()) - {"all"}
    assert set(TRACKER_PACKAGES) == ours


def test_a_missing_tracker_package_fails_before_any_data_with_the_pip_command(tmp_path, monkeypatch, capsys):
    import accelerate.utils

    from effv2birds import data

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    monkeypatch.setattr(data, "load_image_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"log_with='wandb' needs the wandb package.*pip install wandb"):
        train(TrainConfig(**TINY, log_with="wandb", output_dir=str(out)))
    assert not out.exists()
    assert main(["train", "--log-with", "wandb", "--output-dir", str(out), "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "pip install wandb" in err and "Traceback" not in err
    with pytest.raises(SystemExit):  # not an accelerate tracker: argparse lists the choices
        main(["train", "--log-with", "neptune"])
    assert "trackio" in capsys.readouterr().err


def test_tensorboard_writes_the_logged_metrics(tmp_path, cache_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, steps, epoch = _run(tmp_path, cache_dir, "tensorboard")
    events = list((Path(result.run_dir) / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    scalars = {}
    for path in events:
        acc = EventAccumulator(str(path.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = {e.step: e.value for e in acc.Scalars(tag)}
    assert scalars["train/loss"] == pytest.approx({s: r["loss"] for s, r in steps.items()})
    assert scalars["epoch/val_top1"] == pytest.approx({2: epoch["val_top1"]})


def test_trackio_writes_the_logged_metrics(tmp_path, cache_dir, monkeypatch):
    pytest.importorskip("trackio")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = tmp_path / "trackio"
    store.mkdir()
    # trackio reads TRACKIO_DIR once, when imported: point every loaded module at this test's folder
    monkeypatch.setenv("TRACKIO_DIR", str(store))
    for name, module in list(sys.modules.items()):
        if name.startswith("trackio") and hasattr(module, "TRACKIO_DIR"):
            monkeypatch.setattr(module, "TRACKIO_DIR", store)
    from trackio.sqlite_storage import SQLiteStorage

    result, steps, epoch = _run(tmp_path, cache_dir, "trackio")
    assert list(store.glob("effv2birds*.db"))
    logs = SQLiteStorage.get_logs("effv2birds", "run")  # project "effv2birds", run named after the run dir
    logged = {r["step"]: r["train/loss"] for r in logs if "train/loss" in r}
    assert logged == pytest.approx({s: r["loss"] for s, r in steps.items()})
    assert [r["epoch/val_top1"] for r in logs if "epoch/val_top1" in r] == pytest.approx([epoch["val_top1"]])


def test_mlflow_file_store_gets_params_and_metrics(tmp_path, cache_dir, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 opts out of the file store by default
    result, steps, epoch = _run(tmp_path, cache_dir, "mlflow")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("effv2birds")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == str(TrainConfig().lr) and run.data.params["log_with"] == "mlflow"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx({s: r["loss"] for s, r in steps.items()})
    assert run.data.metrics["epoch/val_top1"] == pytest.approx(epoch["val_top1"])
