"""The model registry, in the manner of ``timm``: one file per network registers itself here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from savfi_core.backbones.common import InterpolationModel, MotionField

from savfi_core.vocabulary import SIZES

if TYPE_CHECKING:
    from savfi_core.backbones.pretrained import PretrainedWeights


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., InterpolationModel]  # builder(size_config) -> model
    size_configs: dict[str, Any]  # "paper"/"tiny" -> dataclass of widths
    description: str
    # the output keys that are motion fields, with their convention (savfi_core.backbones.common);
    # where the weights come from is in savfi_core.backbones.pretrained, per size.
    motion_fields: tuple[MotionField, ...] = ()


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, size_configs: dict[str, Any], description: str = "", motion_fields: tuple[MotionField, ...] = ()
):
    """Class or function decorator: ``@register_model("sepconv", {"paper": ..., "tiny": ...})``.

    motion_fields: the keys of ``output.aux`` that are motion fields and how each relates to the
    symmetric displacement of the flow teacher (``savfi_core.backbones.common.MotionField``).
    """
    missing = [size for size in SIZES if size not in size_configs]
    if missing:
        raise ValueError(f"model {name!r} must define sizes {SIZES}, missing {missing}")

    def decorate(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        summary = description or (builder.__doc__ or "").strip().split("\n")[0]
        _MODELS[name] = ModelEntry(name, builder, dict(size_configs), summary, tuple(motion_fields))
        return builder

    return decorate


def list_models() -> list[str]:
    _import_all()
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    _import_all()
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def default_weights_path(name: str, size: str) -> Path:
    """Where the default weights of ``name`` at ``size`` live (its ``PretrainedWeights`` entry:
    shipped or packaged file); the package's ``weights/<size>/<name>.pt`` when none is local."""
    from savfi_core.backbones.pretrained import pretrained_weights

    info = pretrained_weights(name, size)
    path = info.path() if info is not None else None
    return path if path is not None else Path(str(resources.files("savfi_core") / "weights" / size / f"{name}.pt"))


def default_weights_source(name: str, size: str) -> PretrainedWeights | None:
    """The record of what ``weights="default"`` loads (a carrier package's file, or a file shipped
    in savfi that is present), or None when there is nothing to load at that size."""
    from savfi_core.backbones.pretrained import pretrained_weights

    model_entry(name)
    info = pretrained_weights(name, size)
    if info is None or info.source == "release":
        return None
    if info.source == "package":
        return info  # located (and its hash checked) when loaded: a missing carrier then names its install command
    return info if info.path().is_file() else None


def list_pretrained(size: str | None = None) -> list[tuple[str, str]]:
    """(name, size) of every registered model that has default weights (shipped or carried)."""
    pairs = []
    for name in list_models():
        for candidate in model_entry(name).size_configs:
            if (size is None or candidate == size) and default_weights_source(name, candidate) is not None:
                pairs.append((name, candidate))
    return pairs


def create_model(
    name: str, size: str = "paper", weights: str | os.PathLike | None = None, **overrides: Any
) -> InterpolationModel:
    """Build a registered backbone.

    size: "paper" (the published architecture) or "tiny" (same topology, narrower).
    weights: None (random init), "default" (the backbone's entry in ``savfi_core.backbones.pretrained``
        for that size: a file shipped with savfi or the authors' release from its carrier package,
        sha256-checked; ``model.pretrained_weights`` is then that record), or a path to a checkpoint in any layout the authors
        released (see ``savfi_core.backbones.weights``).
    overrides: fields of the size config to replace (e.g. ``kernel_size=5`` for tests).
    """
    entry = model_entry(name)
    if size not in entry.size_configs:
        raise ValueError(f"unknown size {size!r} for {name!r}; choose one of {sorted(entry.size_configs)}")
    config = entry.size_configs[size]
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)
    model = entry.builder(config)
    model.model_name = name
    model.model_size = size
    if weights is not None:
        from savfi_core.backbones.weights import load_weights

        if weights == "default":
            from savfi_core.backbones.pretrained import default_weights_file, pretrained_weights

            weights = default_weights_file(name, size)  # shipped or carried, checked against its sha256
            model.pretrained_weights = pretrained_weights(name, size)  # the record, for provenance
        load_weights(model, weights)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _import_all() -> None:
    # Importing the package imports every backbone file, each of which registers itself.
    import savfi_core.backbones  # noqa: F401
