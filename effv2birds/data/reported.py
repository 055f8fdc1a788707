"""``ReportedDatasetDict``: the ``DatasetDict`` that ``load_image_dataset`` returns, with its report.

The report (what was loaded, skipped, de-duplicated) is a declared attribute of this subclass, so
``data_report(ds)`` and ``skipped_files(ds)`` work on the returned object. A transformed copy
(``ds.map``, ``ds.filter``, ``ds.select_columns``, ...) is a plain ``DatasetDict`` without it: to
keep the report, ask for it explicitly with ``load_image_dataset(..., with_report=True)``, which
returns ``(dataset, report)`` (what the package itself does). Imported lazily: it imports ``datasets``.

>>> from effv2birds.data import load_image_dataset
>>> ds = load_image_dataset("synthetic", synthetic_size=50)
>>> isinstance(ds, ReportedDatasetDict), ds.report["kind"], type(ds.select_columns(["label"])).__name__
(True, 'synthetic', 'DatasetDict')
"""

from __future__ import annotations

from typing import Any

import datasets

__all__ = ["ReportedDatasetDict"]


class ReportedDatasetDict(datasets.DatasetDict):
    """A ``datasets.DatasetDict`` that also holds the report of the load that made it (``.report``).

    >>> import datasets
    >>> d = ReportedDatasetDict({"train": datasets.Dataset.from_dict({"x": [1]})}, {"kind": "demo"})
    >>> list(d), d.report
    (['train'], {'kind': 'demo'})
    """

    report: dict[str, Any]

    def __init__(self, splits: Any, report: dict[str, Any]) -> None:
        super().__init__(splits)
        self.report = report
