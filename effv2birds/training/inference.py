"""Use a trained run: ``load_trained(run_dir).predict(images)`` gives the top-k labels with probabilities.

The run's ``model/best.safetensors`` carries everything needed (label names, model settings and
the preprocessing used in training), so nothing else has to be remembered.

>>> from effv2birds.training import load_trained
>>> predictor = load_trained("runs/birds128")                       # doctest: +SKIP
>>> predictor.predict(["hoopoe.jpg"], top_k=2)                       # doctest: +SKIP
[[('Hoopoe', 0.91), ('Indian-Roller', 0.03)]]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch

from effv2birds.training.setup import default_channels_last

__all__ = ["Predictor", "UnreadableImageError", "load_trained"]


class UnreadableImageError(ValueError):
    """An image given to ``predict`` could not be decoded; the message names it."""


class Predictor:
    """A trained model with its label names and preprocessing.

    ``predict`` accepts PIL images, file paths, or a mix, and returns one list of
    ``(label, probability)`` per image, best first.
    """

    def __init__(self, model: torch.nn.Module, class_names: list[str], preprocessing: dict[str, Any],
                 *, device: str | torch.device = "cpu", meta: dict[str, Any] | None = None) -> None:
        self.device = torch.device(device)
        self.channels_last = default_channels_last(self.device)  # as in training
        model = model.eval().to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.class_names = list(class_names)
        self.preprocessing = dict(preprocessing)
        self.meta = meta or {}

    def _load(self, image: Any) -> torch.Tensor:
        from effv2birds.data.decode import decode_resize

        if isinstance(image, (str, os.PathLike)) and not Path(image).is_file():
            raise FileNotFoundError(f"image {image} does not exist; pass a path to an image file or a PIL image")
        p = self.preprocessing
        try:
            return torch.from_numpy(decode_resize(image, int(p["image_size"]), p.get("resize", "resize")))
        except (OSError, ValueError) as exc:  # PIL: unidentified, truncated, unsupported files
            name = image if isinstance(image, (str, os.PathLike)) else type(image).__name__
            raise UnreadableImageError(f"cannot read image {name}: {exc}; pass a JPEG/PNG/WebP photo") from exc

    @torch.no_grad()
    def predict(self, images: Any | Iterable[Any], top_k: int = 5,
                batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """Top-``top_k`` ``(label, probability)`` for each image (a single image is also accepted).

        >>> import PIL.Image                                            # doctest: +SKIP
        >>> predictor.predict(PIL.Image.new("RGB", (64, 64)), top_k=1)  # doctest: +SKIP
        [[('Hoopoe', 0.12)]]
        """
        from effv2birds.data import to_model_input

        if isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
            images = [images]
        images = list(images)
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be >= 1")
        top_k = min(top_k, len(self.class_names))
        p = self.preprocessing
        out: list[list[tuple[str, float]]] = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self._load(im) for im in images[start:start + batch_size]]).to(self.device)
            inputs = to_model_input(batch, mean=tuple(p["mean"]), std=tuple(p["std"]),
                                    normalize=bool(p.get("normalize", True)), channels_last=self.channels_last)
            probs = self.model(inputs).float().softmax(dim=-1)
            values, indices = probs.topk(top_k, dim=-1)
            for vals, idxs in zip(values.tolist(), indices.tolist()):
                out.append([(self.class_names[i], float(v)) for v, i in zip(vals, idxs)])
        return out


def load_trained(run_dir: str | Path, which: str = "best", device: str | torch.device | None = None) -> Predictor:
    """Load ``run_dir/model/{which}.safetensors`` (``which`` is ``"best"`` or ``"last"``, or a file path).

    >>> load_trained("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no trained weights at /nonexistent/model/best.safetensors; pass the output_dir ...
    """
    from effv2birds.models import build_model
    from effv2birds.training.records import read_weights

    path = Path(which) if str(which).endswith(".safetensors") else Path(run_dir) / "model" / f"{which}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights at {path}; pass the output_dir of a finished run (it has model/{path.name})"
        )
    state, meta = read_weights(path)
    if "model_kwargs" not in meta or "class_names" not in meta:
        raise ValueError(f"{path} has no effv2birds metadata (label names, model settings); "
                         "it was not written by effv2birds train")
    model = build_model(**meta["model_kwargs"], pretrained=False)
    model.load_state_dict(state)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model, meta["class_names"], meta["preprocessing"], device=device, meta=meta)
