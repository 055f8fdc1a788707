"""The reproduction study: experiment plans, an idempotent runner and the results report."""

from effv2birds.study.compare import (RunHistory, compare_runs, format_comparison, plot_curves, read_curves, read_runs,
                                      write_curves)
from effv2birds.study.experiments import EXPERIMENTS, PRESETS, STUDY_FIGURES, PlannedRun, plan_runs, run_status
from effv2birds.study.report import COLUMNS, collect_rows, read_epochs, write_report
from effv2birds.study.runner import run_planned

__all__ = [
    "COLUMNS", "EXPERIMENTS", "PRESETS", "STUDY_FIGURES", "PlannedRun", "RunHistory", "collect_rows", "compare_runs",
    "format_comparison", "plan_runs", "plot_curves", "read_curves", "read_epochs", "read_runs", "run_planned",
    "run_status", "write_curves", "write_report",
]
