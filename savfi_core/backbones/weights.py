"""Loading weights into a backbone, from savfi's own files or the authors' released checkpoints.

The original checkpoints come in several layouts (see
``../shared/fixtures/checkpoint_manifests/README.md``):

- a bare state_dict (``sepconv_base_l1.pth``, ``rrin_base.pth``, ``dain_base.pth``);
- ``{'state_dict': ...}`` (``voxelflow_ft.pth``; ``cain_base.pth`` with ``module.`` prefixes
  from ``nn.DataParallel``; meta checkpoints ``{'epoch', 'arch', 'state_dict', 'best_PSNR'}``);
- ``{'state_dictFC': ..., 'state_dictAT': ...}`` (Super-SloMo, one state_dict per U-Net);
- whole meta-learning systems: ``net.``-prefixed network keys followed by
  ``inner_loop_optimizer.names_learning_rates_dict.*``, optionally ``gamma_mult`` and
  ``attenuator.*`` (L2F) and ``criterion.*`` (Super-SloMo's VGG16).

The original loader copied whatever matched and silently skipped the rest, so a wrong prefix
loaded nothing. Here every network key must be matched exactly, in name and shape, or loading
fails with the offending keys named. Only learned-rate, attenuator and criterion entries of a
meta system are set aside (returned to the caller, for ``savfi_core.meta``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from savfi_core.checkpoint import CheckpointError, safe_load

# Entries of a whole SAVFI meta system that are not part of the network.
META_SYSTEM_PREFIXES = ("inner_loop_optimizer.", "attenuator.", "criterion.")
META_SYSTEM_KEYS = ("gamma_mult",)
# Keys PyTorch fills in itself when an older file lacks them.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's network keys do not match the model one to one."""


def load_weights(model: torch.nn.Module, source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """Load ``source`` (a path or an already-loaded object) into ``model``, strictly.

    Returns the meta-system entries found beside the network (learned inner learning rates,
    attenuator, ...), keyed as in the file; empty for plain network checkpoints.
    """
    origin = str(source) if isinstance(source, (str, os.PathLike)) else "<in-memory checkpoint>"
    raw = safe_load(source) if isinstance(source, (str, os.PathLike)) else source
    network_state, meta_state = split_checkpoint(raw, model, origin)
    check_state_matches(model, network_state, origin)
    model.load_state_dict(network_state, strict=False)  # strictness was checked above, with names
    return meta_state


def split_checkpoint(raw: Any, model: torch.nn.Module, origin: str = "<checkpoint>") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Unwrap any known layout into (network state_dict in our names, meta-system entries)."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{origin}: expected a dict of tensors, got {type(raw).__name__}")
    sections: dict[str, str] = dict(getattr(model, "checkpoint_sections", {}) or {})
    if sections and any(key in raw for key in sections):
        missing = [key for key in sections if key not in raw]
        if missing:
            raise CheckpointMismatchError(f"{origin}: has {sorted(k for k in sections if k in raw)} but lacks {missing}")
        flat: dict[str, Any] = {}
        for section, prefix in sections.items():
            flat.update({prefix + key: value for key, value in _tensor_items(raw[section], origin, section)})
    elif "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        flat = dict(_tensor_items(raw["state_dict"], origin, "state_dict"))
    else:
        flat = dict(_tensor_items(raw, origin, None))

    flat = {_strip_prefix(key, "module."): value for key, value in flat.items()}
    # Tensors the authors' file holds for training only (e.g. RIFE's teacher block): dropped by the
    # model's explicit list, so everything else is still matched one to one.
    training_only = tuple(getattr(model, "checkpoint_training_only_prefixes", ()) or ())
    if training_only:
        flat = {key: value for key, value in flat.items() if not key.startswith(training_only)}
    is_meta_system = any(key.startswith("net.") for key in flat)
    network_state: dict[str, Tensor] = {}
    meta_state: dict[str, Tensor] = {}
    for key, value in flat.items():
        if is_meta_system:
            if key.startswith("net."):
                network_state[key[len("net.") :]] = value
            elif key.startswith(META_SYSTEM_PREFIXES) or key in META_SYSTEM_KEYS:
                meta_state[key] = value
            else:
                network_state[key] = value  # reported as unexpected below
        else:
            network_state[key] = value
    renamed = {_rename(key, getattr(model, "checkpoint_name_map", ())): value for key, value in network_state.items()}
    return renamed, meta_state


def check_state_matches(model: torch.nn.Module, state: Mapping[str, Tensor], origin: str = "<checkpoint>") -> None:
    """Raise :class:`CheckpointMismatchError` naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state and not key.endswith(OPTIONAL_SUFFIXES)]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or misshaped:
        lines = [f"{origin} does not match {type(model).__name__}:"]
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if keys:
                shown = keys[:20] + ([f"... and {len(keys) - 20} more"] if len(keys) > 20 else [])
                lines.append(f"  {title} ({len(keys)}): " + ", ".join(shown))
        raise CheckpointMismatchError("\n".join(lines))


def _tensor_items(mapping: Any, origin: str, section: str | None):
    if not isinstance(mapping, Mapping):
        where = f"[{section!r}]" if section else ""
        raise CheckpointError(f"{origin}{where}: expected a dict of tensors, got {type(mapping).__name__}")
    for key, value in mapping.items():
        if isinstance(value, Tensor):
            yield key, value
        elif section is None and key in ("epoch", "arch", "best_PSNR", "optimizer", "grad_dict"):
            continue  # bookkeeping entries of a bare dict are not weights
        elif section is None:
            raise CheckpointError(f"{origin}: entry {key!r} is a {type(value).__name__}, not a tensor")
        else:
            raise CheckpointError(f"{origin}[{section!r}]: entry {key!r} is a {type(value).__name__}, not a tensor")


def _strip_prefix(key: str, prefix: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def _rename(key: str, name_map) -> str:
    for original, ours in name_map:
        if key.startswith(original):
            return ours + key[len(original) :]
    return key
