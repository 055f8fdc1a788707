"""Pretrained weights that work offline: find a file, read it safely, fit it into a model.

Search order: an explicit ``weights=`` file, then the local caches (torch hub
``<torch.hub.get_dir()>/checkpoints/`` and the Hugging Face hub cache), then a download. Before
downloading, one short reachability check (a few seconds) replaces the hub clients' long retry
loops, so an offline machine with nothing cached fails fast with a message saying which file
was looked for, where to put it, and how to pass it as ``weights=``.

Set ``EFFV2BIRDS_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1`` for timm weights) to never try the network.

>>> from effv2birds.models.weights import torchvision_weights_file
>>> torchvision_weights_file().name
'efficientnet_v2_s-dd5fe13b.pth'
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .errors import ModelConfigError, WeightsError, WeightsNotFoundError

__all__ = ["resolve_weights_file", "read_state_dict", "fit_state_dict", "torchvision_weights_file", "hf_cache_dir",
           "NETWORK_TIMEOUT_S"]

NETWORK_TIMEOUT_S = 3.0
_HF_FILES = ("model.safetensors", "pytorch_model.bin")
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")  # EMA first, as timm does
_PREFIXES = ("module.", "_orig_mod.")
_TRUE = ("1", "true", "yes", "on")


def _offline(hf: bool) -> bool:
    names = ["EFFV2BIRDS_OFFLINE"] + (["HF_HUB_OFFLINE"] if hf else [])
    return any(os.environ.get(n, "").strip().lower() in _TRUE for n in names)


def torchvision_url() -> str:
    """The download URL of torchvision's EfficientNet_V2_S_Weights.IMAGENET1K_V1."""
    from torchvision.models import EfficientNet_V2_S_Weights

    return EfficientNet_V2_S_Weights.IMAGENET1K_V1.url


def torchvision_weights_file() -> Path:
    """Where torchvision keeps (and looks for) its ImageNet weights of efficientnet_v2_s.

    ``torch.hub.get_dir()`` follows ``TORCH_HOME`` (default ``~/.cache/torch/hub``).
    """
    name = torchvision_url().rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``...)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _unreachable(url: str) -> str | None:
    """None when ``url``'s server answers within NETWORK_TIMEOUT_S, else the reason it does not."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=NETWORK_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # the server answered; the real client handles redirects and auth
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
    return None


def _timm_cfg(spec):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        import timm

        offer = ", ".join(timm.list_pretrained("*efficientnetv2_s*")) or "none"
        raise ModelConfigError(
            f"timm has no pretrained weights for {spec.name!r}; pretrained timm models: {offer} "
            "(or pass weights='path/to/file.safetensors' for your own file)"
        )
    return cfg


def _from_dir(path: Path) -> Path:
    for fname in _HF_FILES:
        if (path / fname).is_file():
            return path / fname
    raise WeightsNotFoundError(
        f"weights={str(path)!r} is a folder without {' or '.join(_HF_FILES)}; pass the weights file itself"
    )


def resolve_weights_file(spec, weights: str | os.PathLike | None = None) -> Path:
    """The local file with the weights for ``spec``: explicit file, caches, else downloaded.

    Raises WeightsNotFoundError (quickly, when offline) naming the file looked for and the fix.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            return _from_dir(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist; check the path given as weights=")
        return path
    if spec.backend == "torchvision":
        return _torchvision_file()
    return _timm_file(spec)


def _torchvision_file() -> Path:
    target = torchvision_weights_file()
    if target.is_file():
        return target
    url = torchvision_url()
    reason = "offline mode (EFFV2BIRDS_OFFLINE) is set" if _offline(hf=False) else _unreachable(url)
    if reason is None:
        target.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = target.stem.rsplit("-", 1)[-1]
        try:  # writes a temporary file and moves it into place, so a broken download leaves nothing behind
            torch.hub.download_url_to_file(url, str(target), hash_prefix=hash_prefix, progress=True)
            return target
        except Exception as exc:  # noqa: BLE001 - any download failure becomes the message below
            reason = f"{type(exc).__name__}: {exc}"
    raise WeightsNotFoundError(
        f"torchvision ImageNet weights for efficientnet_v2_s are not cached and could not be downloaded "
        f"({reason}). Looked for {target}. Fix: download {url} on a machine with internet and put it at {target} "
        f"(set TORCH_HOME to use another cache), or pass weights='/path/to/{target.name}'."
    )


def _timm_file(spec) -> Path:
    cfg = _timm_cfg(spec)
    repo = cfg.hf_hub_id
    cache = hf_cache_dir()
    looked: list[str] = []
    if repo:
        from huggingface_hub import try_to_load_from_cache

        for fname in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else list(_HF_FILES)):
            hit = try_to_load_from_cache(repo, fname, cache_dir=str(cache))
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
            looked.append(str(cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "<revision>" / fname))
    legacy = None
    if cfg.url:  # older timm versions downloaded the GitHub release file into the torch hub cache
        legacy = Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]
        if legacy.is_file():
            return legacy
        looked.append(str(legacy))

    reason = "offline mode (HF_HUB_OFFLINE or EFFV2BIRDS_OFFLINE) is set" if _offline(hf=True) else None
    if reason is None and repo:
        reason = _unreachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        if reason is None:
            from huggingface_hub import hf_hub_download

            try:
                return Path(hf_hub_download(repo, _HF_FILES[0], cache_dir=str(cache)))
            except Exception as exc:  # noqa: BLE001
                reason = f"{type(exc).__name__}: {exc}"
    elif reason is None:
        reason = "no Hugging Face repository is known for it"
    url = f"https://huggingface.co/{repo}/resolve/main/{_HF_FILES[0]}" if repo else cfg.url
    full_name = f"{spec.arch}.{cfg.tag}" if cfg.tag else spec.name
    raise WeightsNotFoundError(
        f"timm pretrained weights {full_name!r} are not cached and could not be downloaded ({reason}). "
        f"Looked for: {'; '.join(looked)}. Fix: on a machine with internet run "
        f"`hf download {repo} {_HF_FILES[0]}` (huggingface_hub's CLI) and copy its cache to {cache}, or download {url} "
        f"and pass weights='/path/to/{_HF_FILES[0]}'."
    )


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or PyTorch weights file into a plain state dict (CPU tensors).

    Checkpoint wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and ``module.`` /
    ``_orig_mod.`` prefixes are removed. A truncated or foreign file raises WeightsError.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch, pickle, zipfile and safetensors each raise their own type
        raise WeightsError(
            f"weights file {str(path)!r} could not be read ({type(exc).__name__}: {str(exc)[:200]}); it is truncated "
            f"or not a PyTorch/safetensors weights file. Download it again, or pass another file as weights="
        ) from exc
    for _ in range(3):
        if isinstance(state, Mapping):
            inner = next((state[k] for k in _WRAPPER_KEYS if isinstance(state.get(k), Mapping)), None)
            if inner is not None:
                state = inner
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(
            f"weights file {str(path)!r} holds {type(state).__name__}, not a state dict of tensors; "
            "save weights with torch.save(model.state_dict(), path) or safetensors"
        )
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _looks_like(keys) -> str:
    if "features.0.0.weight" in keys:
        return "torchvision EfficientNet (use model 'torchvision/efficientnet_v2_s')"
    if "conv_stem.weight" in keys:
        return "timm EfficientNet (use backend='timm' and the matching timm name)"
    return "an unknown architecture"


def _stem_and_head(model: nn.Module) -> tuple[str, str]:
    if hasattr(model, "conv_stem"):
        return "conv_stem.weight", "classifier."
    return "features.0.0.weight", "classifier.1."


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "the weights file") -> list[str]:
    """Load ``state`` into ``model``: backbone strictly, head only if its shape fits.

    A head of another size (e.g. 1000 ImageNet classes into a 25-class model) is skipped, so the
    model keeps its fresh head; a stem for 3 channels is adapted to the model's input channels (summed over RGB
    for 1 channel, as timm does). Returns the names of the keys that were not loaded (the head).
    Any other mismatch raises WeightsError with a short summary.
    """
    from timm.models._manipulate import adapt_input_conv

    own = model.state_dict()
    stem, head = _stem_and_head(model)
    state = dict(state)
    if stem in state and stem in own and state[stem].shape[1] != own[stem].shape[1] and state[stem].ndim == 4:
        state[stem] = adapt_input_conv(own[stem].shape[1], state[stem], base_chans=state[stem].shape[1])
    skipped = [k for k in own if k.startswith(head) and (k not in state or state[k].shape != own[k].shape)]
    for k in skipped:
        state.pop(k, None)
    missing = [k for k in own if k not in state and k not in skipped and not k.endswith("num_batches_tracked")]
    # BatchNorm step counters carry no weights; leave them out of the examples
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing from the file (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unknown weights in the file (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shapes differ (e.g. {'; '.join(shapes[:3])})")
        raise WeightsError(
            f"{source} does not fit this {type(model).__name__}: {'; '.join(parts)}. The file looks like "
            f"{_looks_like(state.keys())}. Build the model with the name, backend, variant, width/depth multipliers and "
            "in_chans of the model that saved the file (ImageNet weights fit variant='default', multipliers 1.0)."
        )
    model.load_state_dict(state, strict=False)
    return skipped
