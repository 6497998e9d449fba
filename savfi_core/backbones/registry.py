"""The model registry, in the manner of ``timm``: one file per network registers itself here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from torch import nn

from savfi_core.backbones.common import InterpolationModel

from savfi_core.vocabulary import SIZES


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., InterpolationModel]  # builder(size_config) -> model
    size_configs: dict[str, Any]  # "paper"/"tiny" -> dataclass of widths
    description: str


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, size_configs: dict[str, Any], description: str = ""):
    """Class or function decorator: ``@register_model("sepconv", {"paper": ..., "tiny": ...})``."""
    missing = [size for size in SIZES if size not in size_configs]
    if missing:
        raise ValueError(f"model {name!r} must define sizes {SIZES}, missing {missing}")

    def decorate(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelEntry(name, builder, dict(size_configs), description or (builder.__doc__ or "").strip().split("\n")[0])
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


def create_model(
    name: str, size: str = "paper", weights: str | os.PathLike | None = None, **overrides: Any
) -> InterpolationModel:
    """Build a registered backbone.

    size: "paper" (the published architecture) or "tiny" (same topology, narrower).
    weights: None (random init), "default" (the backbone's registered weights for that size, see
        ``savfi_core.backbones.pretrained``: shipped, packaged or the authors' release), or a
        path to a checkpoint in any layout the authors released (see ``savfi_core.backbones.weights``).
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
            from savfi_core.backbones.pretrained import default_weights_file

            weights = default_weights_file(name, size)  # where it comes from, checked against its sha256
        load_weights(model, weights)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _import_all() -> None:
    # Importing the package imports every backbone file, each of which registers itself.
    import savfi_core.backbones  # noqa: F401
