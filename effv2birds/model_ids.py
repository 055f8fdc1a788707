"""One name per model: ``backend/architecture[.tag]``, e.g. ``torchvision/efficientnet_v2_s`` or
``timm/tf_efficientnetv2_s.in21k_ft_in1k`` (timm's own ``arch.tag``). The study's architecture
changes (``variant``, width/depth multipliers) are options of that model, not other names.

Older spellings (``efficientnet_v2_s`` with ``backend="timm"``, ``timm:efficientnetv2_s``, a bare
timm name) still work and give a FutureWarning with the new name. No torch import: configs use this.

>>> parse_model_id("timm/tf_efficientnetv2_s.in21k_ft_in1k")
ModelSpec(backend='timm', arch='tf_efficientnetv2_s', tag='in21k_ft_in1k')
>>> parse_model_id("torchvision/efficientnet_v2_s").id
'torchvision/efficientnet_v2_s'
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from effv2birds.errors import ModelConfigError

__all__ = ["BACKENDS", "DEFAULT_MODEL", "ModelSpec", "TIMM_ARCHS", "TORCHVISION_ARCHS", "model_ids", "parse_model_id",
           "saved_model_kwargs"]

TORCHVISION_ARCHS = ("efficientnet_v2_s",)
TIMM_ARCHS = ("efficientnetv2_s", "tf_efficientnetv2_s", "efficientnetv2_rw_s")
BACKENDS = ("torchvision", "timm")
DEFAULT_MODEL = "torchvision/efficientnet_v2_s"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model id: backend, architecture and (timm only) pretrained tag."""

    backend: str
    arch: str
    tag: str | None = None

    @property
    def name(self) -> str:
        """The architecture with its tag, as timm writes it (``arch.tag``)."""
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def id(self) -> str:
        """The one identifier: ``backend/arch[.tag]``."""
        return f"{self.backend}/{self.name}"


def model_ids() -> list[str]:
    """The ids ``build_model`` accepts (timm ids may add a pretrained tag).

    >>> model_ids()[:2]
    ['torchvision/efficientnet_v2_s', 'timm/efficientnetv2_s']
    """
    return [f"torchvision/{a}" for a in TORCHVISION_ARCHS] + [f"timm/{a}" for a in TIMM_ARCHS]


def _unknown(name: object) -> ModelConfigError:
    return ModelConfigError(f"unknown model {name!r}; choose one of {', '.join(model_ids())} "
                            "(timm ids may carry a pretrained tag, e.g. 'timm/tf_efficientnetv2_s.in21k_ft_in1k')")


def _legacy(text: str, backend: str | None) -> tuple[str, str]:
    """(backend, arch.tag) of an old spelling."""
    if text.lower().startswith("timm:"):
        return "timm", text[5:]
    arch = text.partition(".")[0]
    if arch in TIMM_ARCHS:
        return "timm", text
    if arch in TORCHVISION_ARCHS:  # efficientnet_v2_s with backend="timm" meant timm's efficientnetv2_s
        return (backend or "torchvision"), ("efficientnetv2_s" + text[len(arch):] if backend == "timm" else text)
    raise _unknown(text)


def parse_model_id(name: str | None = None, backend: str | None = None, *, warn: bool = True) -> ModelSpec:
    """The ModelSpec of a model id; an old spelling (optionally with the old ``backend`` argument) is
    translated with a FutureWarning naming the new id. ``None``: the default model. Tags are
    checked against timm when given.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     spec = parse_model_id("efficientnet_v2_s", backend="timm")
    >>> spec.id, "timm/efficientnetv2_s" in str(caught[0].message)
    ('timm/efficientnetv2_s', True)
    """
    if name is None:  # the default model; with the old backend argument, that backend's EfficientNetV2-S
        name = DEFAULT_MODEL if backend is None else "efficientnet_v2_s"
    if not isinstance(name, str) or not name.strip():
        raise _unknown(name)
    if backend is not None and backend not in BACKENDS:
        raise ModelConfigError(f"backend={backend!r} is not supported; choose one of {', '.join(BACKENDS)}")
    text = name.strip()
    prefix, slash, rest = text.partition("/")
    if slash:
        if prefix not in BACKENDS:
            raise _unknown(name)
        if backend is not None and backend != prefix:
            raise ModelConfigError(f"model {name!r} is a {prefix} model but backend={backend!r} was given; "
                                   f"drop backend (the id names it)")
        found_backend, full = prefix, rest
    else:
        found_backend, full = _legacy(text, backend)
    arch, _, tag = full.partition(".")
    if arch not in (TIMM_ARCHS if found_backend == "timm" else TORCHVISION_ARCHS):
        raise _unknown(name)
    spec = ModelSpec(found_backend, arch, tag or None)
    if not slash and warn:
        warnings.warn(f"model={name!r}" + (f" with backend={backend!r}" if backend else "")
                      + f" is an old spelling; write model={spec.id!r}", FutureWarning, stacklevel=4)
    if spec.tag is not None:
        _check_tag(name, spec)
    return spec


def _check_tag(name: str, spec: ModelSpec) -> None:
    if spec.backend != "timm":
        raise ModelConfigError(
            f"model {name!r}: pretrained tags are a timm feature; torchvision's efficientnet_v2_s has one "
            "weight set (IMAGENET1K_V1): use 'torchvision/efficientnet_v2_s' with pretrained=True")
    import timm

    known = timm.list_pretrained(f"{spec.arch}.*")
    if spec.name not in known:
        raise ModelConfigError(
            f"model {name!r}: timm has no pretrained tag {spec.tag!r} for {spec.arch}; "
            f"choose one of {', '.join(known) or '(none: this architecture has no pretrained weights)'}")


def saved_model_kwargs(kwargs: dict) -> dict:
    """``build_model`` keywords saved with a run's weights, in today's spelling: runs saved before the
    model id (``name="efficientnet_v2_s"`` plus ``backend``) load without a warning, since the user
    cannot change what an old run wrote.

    >>> saved_model_kwargs({"name": "efficientnet_v2_s", "backend": "timm", "num_classes": 3})
    {'num_classes': 3, 'name': 'timm/efficientnetv2_s'}
    """
    kwargs = dict(kwargs)
    spec = parse_model_id(kwargs.pop("name", None), kwargs.pop("backend", None), warn=False)
    return {**kwargs, "name": spec.id}
