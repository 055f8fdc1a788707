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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import torch

from effv2birds.errors import ConfigError, Effv2birdsError
from effv2birds.model_ids import saved_model_kwargs
from effv2birds.preprocessing import Preprocessing
from effv2birds.run_files import weights_file
from effv2birds.training.setup import default_channels_last

__all__ = ["Prediction", "Predictor", "TTA_MODES", "UnreadableImageError", "check_tta", "load_trained"]

TTA_MODES = ("none", "flip")  # test-time augmentation: "flip" averages the photo and its mirror image


class UnreadableImageError(Effv2birdsError, ValueError):
    """An image given to ``predict`` could not be decoded; the message names it."""


class Prediction(NamedTuple):
    """One image's result from :meth:`Predictor.predict_iter`: ``top_k`` is ``None`` when ``error`` says
    why the image could not be read."""

    image: Any
    top_k: list[tuple[str, float]] | None
    error: str | None = None


def check_tta(tta: str | None) -> str:
    """``tta`` as one of :data:`TTA_MODES` (``None`` means ``"none"``); anything else is a clear error.

    >>> check_tta(None), check_tta("flip")
    ('none', 'flip')
    """
    mode = "none" if tta is None else str(tta).lower()
    if mode not in TTA_MODES:
        raise ConfigError(f"tta={tta!r} is not a test-time augmentation; choose one of {', '.join(TTA_MODES)}")
    return mode


def _name(image: Any) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else type(image).__name__


class Predictor:
    """A trained model with its label names and its run's :class:`~effv2birds.preprocessing.Preprocessing`.

    ``predict`` accepts PIL images, file paths, or a mix, and returns one list of
    ``(label, probability)`` per image, best first. ``preprocessing`` may also be given in its saved
    (dict) form, of this version or an earlier one.

    >>> from effv2birds.models import build_model
    >>> pre = Preprocessing(input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> model = build_model(num_classes=2, width_multiplier=0.25, depth_multiplier=0.1)
    >>> predictor = Predictor(model, ["a", "b"], pre.to_dict())
    >>> predictor.preprocessing == pre
    True
    """

    def __init__(self, model: torch.nn.Module, class_names: list[str], preprocessing: Preprocessing | dict[str, Any],
                 *, device: str | torch.device = "cpu", meta: dict[str, Any] | None = None) -> None:
        self.device = torch.device(device)
        self.channels_last = default_channels_last(self.device)  # as in training
        model = model.eval().to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.class_names = list(class_names)
        self.preprocessing = Preprocessing.from_dict(preprocessing)
        self.meta = meta or {}

    def load_image(self, image: Any) -> torch.Tensor:
        """One photo decoded and resized as the run's preprocessing says: uint8 ``(3, S, S)``.

        >>> predictor.load_image("hoopoe.jpg").shape                    # doctest: +SKIP
        torch.Size([3, 32, 32])
        """
        if isinstance(image, (str, os.PathLike)) and not Path(image).is_file():
            raise FileNotFoundError(f"image {image} does not exist; pass a path to an image file or a PIL image")
        try:
            return self.preprocessing.load_image(image)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:  # PIL: unidentified, truncated, unsupported
            raise UnreadableImageError(f"cannot read image {_name(image)}: {exc}; pass a JPEG/PNG/WebP photo") from exc

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, tta: str | None = None) -> torch.Tensor:
        """Class probabilities ``(B, classes)`` of a uint8 batch ``(B, 3, S, S)`` from :meth:`load_image`
        (or a cache of the same size); ``tta="flip"`` averages them with those of the mirrored batch.

        >>> predictor.probabilities(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape  # doctest: +SKIP
        torch.Size([2, 25])
        """
        inputs = self.preprocessing.to_model_input(images.to(self.device), channels_last=self.channels_last)
        probs = self.model(inputs).float().softmax(dim=-1)
        if check_tta(tta) == "flip":
            mirrored = inputs.flip(-1)
            if self.channels_last:
                mirrored = mirrored.contiguous(memory_format=torch.channels_last)
            probs = (probs + self.model(mirrored).float().softmax(dim=-1)) / 2
        return probs

    def _load_batch(self, images: list[Any], pool: ThreadPoolExecutor) -> list[torch.Tensor | Exception]:
        def load(image: Any) -> torch.Tensor | Exception:
            try:
                return self.load_image(image)
            except (FileNotFoundError, UnreadableImageError) as exc:
                return exc

        return list(pool.map(load, images))

    def _run(self, images: Any, top_k: int, batch_size: int, tta: str | None):
        """``(image, top-k or None, exception or None)`` per image, one batch at a time."""
        if isinstance(images, (str, os.PathLike)) or hasattr(images, "convert"):
            images = [images]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k={top_k!r} must be a positive integer (the number of labels per image)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
        check_tta(tta)
        top_k = min(top_k, len(self.class_names))
        images = iter(images)
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
            while chunk := [im for _, im in zip(range(batch_size), images)]:
                loaded = self._load_batch(chunk, pool)
                good = [t for t in loaded if isinstance(t, torch.Tensor)]
                ranked = iter([])
                if good:
                    values, indices = self.probabilities(torch.stack(good), tta=tta).topk(top_k, dim=-1)
                    ranked = zip(values.tolist(), indices.tolist())
                for image, item in zip(chunk, loaded):
                    if isinstance(item, Exception):
                        yield image, None, item
                        continue
                    vals, idxs = next(ranked)
                    yield image, [(self.class_names[i], float(v)) for v, i in zip(vals, idxs)], None

    def predict_iter(self, images: Any | Iterable[Any], top_k: int = 5, batch_size: int = 32,
                     tta: str | None = None) -> Iterator[Prediction]:
        """:class:`Prediction` for each image, in order, one batch at a time (for many photos: nothing
        is kept); an image that cannot be read gets its ``error`` and the others go on.

        >>> [p.error for p in predictor.predict_iter(["missing.jpg"])]  # doctest: +SKIP
        ['image missing.jpg does not exist; pass a path to an image file or a PIL image']
        """
        for image, top, exc in self._run(images, top_k, batch_size, tta):
            yield Prediction(image, top, None if exc is None else str(exc))

    def predict(self, images: Any | Iterable[Any], top_k: int = 5, batch_size: int = 32,
                tta: str | None = None) -> list[list[tuple[str, float]]]:
        """Top-``top_k`` ``(label, probability)`` for each image (a single image is also accepted);
        an image that cannot be read raises (``predict_iter`` reports it and goes on).

        >>> import PIL.Image                                            # doctest: +SKIP
        >>> predictor.predict(PIL.Image.new("RGB", (64, 64)), top_k=1)  # doctest: +SKIP
        [[('Hoopoe', 0.12)]]
        """
        out: list[list[tuple[str, float]]] = []
        for _, top, exc in self._run(images, top_k, batch_size, tta):
            if exc is not None:
                raise exc
            out.append(top)
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

    if (Path(run_dir) / "model.safetensors").is_file():  # a folder from `effv2birds export --format hub`
        from effv2birds.export.hub import load_hub_predictor

        return load_hub_predictor(run_dir, device=device)
    path = Path(which) if str(which).endswith(".safetensors") else weights_file(run_dir, which)
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained weights at {path}; pass the output_dir of a finished run (it has model/{path.name})"
        )
    state, meta = read_weights(path)
    if "model_kwargs" not in meta or "class_names" not in meta:
        raise ConfigError(f"{path} has no effv2birds metadata (label names, model settings); "
                         "it was not written by effv2birds train")
    model = build_model(**saved_model_kwargs(meta["model_kwargs"]), pretrained=False)
    model.load_state_dict(state)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Predictor(model, meta["class_names"], Preprocessing.from_meta(meta), device=device, meta=meta)
