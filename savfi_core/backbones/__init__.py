"""Frame-interpolation backbones behind one registry.

>>> from savfi_core.backbones import create_model, list_models
>>> model = create_model("sepconv", size="tiny")
>>> output = model(frame0, frame1)        # output.pred: [B,3,H,W]
"""
import importlib
import pkgutil

from savfi_core.backbones.common import InterpolationModel, InterpolationOutput, pad_to_multiple
from savfi_core.backbones.registry import (
    count_parameters,
    create_model,
    default_weights_path,
    default_weights_source,
    list_models,
    list_pretrained,
    register_model,
)

_INFRASTRUCTURE = {"carrier", "common", "registry", "weights"}

# Each backbone file registers itself on import; discover them so adding a network is adding a file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "InterpolationModel",
    "InterpolationOutput",
    "count_parameters",
    "create_model",
    "default_weights_path",
    "default_weights_source",
    "list_models",
    "list_pretrained",
    "pad_to_multiple",
    "register_model",
]
