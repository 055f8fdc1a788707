"""The names of the files in a run folder, written once for the trainer that writes them and every
reader (resume checks, evaluation, compare, the study, export) that looks for them.

docs/training.md ("The run directory") describes what each file holds. The names inside a checkpoint folder
and of the training-photo hashes stay with the modules that write and read them (``training/checkpoint.py``,
``data/dedup.py``).

>>> from effv2birds.run_files import CONFIG_JSON, SUMMARY, weights_file
>>> CONFIG_JSON, SUMMARY, weights_file("runs/birds32").as_posix()
('config.json', 'metrics.json', 'runs/birds32/model/best.safetensors')
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHECKPOINTS", "CONFIG_JSON", "CONFIG_TOML", "DATA_REPORT", "ENVIRONMENT", "METRICS_LOG", "RECORDS",
           "SUMMARY", "weights_file"]

CONFIG_JSON = "config.json"  # TrainConfig.to_dict(); TrainConfig.from_saved reads it
CONFIG_TOML = "config.toml"  # the same config as TOML: `--config RUN/config.toml` trains it again
ENVIRONMENT = "environment.json"  # versions, devices, precision, command
DATA_REPORT = "data_report.json"  # source, split sizes, class names, skipped files
METRICS_LOG = "metrics.jsonl"  # one line per log interval and per epoch
SUMMARY = "metrics.json"  # written last, so a run folder that has it is a finished run (also an evaluation's result)

# The small records of a run (no weights, no checkpoints), SUMMARY last: what the study copies for a twin run.
RECORDS = (CONFIG_JSON, CONFIG_TOML, ENVIRONMENT, DATA_REPORT, METRICS_LOG, SUMMARY)

CHECKPOINTS = "checkpoints"  # checkpoint-<step>/ folders, one per save (training/checkpoint.py)


def weights_file(run_dir: str | Path, which: str = "best") -> Path:
    """The run's weights with their metadata: ``model/best.safetensors`` (best validation epoch) or
    ``model/last.safetensors`` (the last epoch).

    >>> weights_file("runs/x", "last").as_posix()
    'runs/x/model/last.safetensors'
    """
    return Path(run_dir) / "model" / f"{which}.safetensors"
