"""Export a trained run: ONNX or TorchScript files checked against PyTorch right after export, or a
Hugging Face Hub folder (timm's layout, a model card) that timm and ``load_trained`` load, optionally
pushed to the Hub. See docs/use-a-trained-model.md.

>>> from effv2birds.export import FORMATS
>>> FORMATS
('onnx', 'torchscript', 'hub')
"""

from .errors import ExportError, require_packages
from .graph import TOLERANCE, export_onnx, export_torchscript
from .hub import is_hub_folder, load_hub_predictor, push_to_hub, write_hub_folder
from .runner import FORMATS, export_run
from .source import ExportResult, ExportSource, load_source

__all__ = [
    "ExportError",
    "ExportResult",
    "ExportSource",
    "FORMATS",
    "TOLERANCE",
    "export_onnx",
    "export_run",
    "export_torchscript",
    "is_hub_folder",
    "load_hub_predictor",
    "load_source",
    "push_to_hub",
    "require_packages",
    "write_hub_folder",
]
