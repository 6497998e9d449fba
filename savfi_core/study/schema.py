"""The study's parameters, each declared once, as typed dataclasses.

A *stage config* lists every parameter of one notebook (``notebooks/<stage>.ipynb``), which is
also the signature of its stage function (``savfi_core.study.stages.run_<stage>``) and the cell
``make_notebooks.py`` writes. Each field says where its value comes from in a grid:

* ``origin="section"``: the grid's section of that stage (``meta_train: {steps: 8}``), checked
  against the field's type and ``minimum``; per-backbone overrides may replace it.
* ``origin="job"``: filled in by the expansion (backbone, seed, upstream checkpoints, ...).

A *grid section* (``SECTIONS``) is made from the section fields of its stage config plus the
few keys that only steer the expansion (``meta_train.algorithms``, ``evaluate.protocols``), so a
field added to a stage config is at once a key of the YAML, a parameter of the notebook and an
argument of the stage function. ``example`` is the value the notebook's parameters cell shows.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any, Literal, Optional

from savfi_core.vocabulary import ALGORITHMS, LAUNCHERS, META_TRAIN_METHODS, METHOD_ORDER, PROTOCOLS, SIZES, STAGES, SUPPORT_LOSSES

Size = Literal[SIZES]
Protocol = Literal[PROTOCOLS]
Algorithm = Literal[ALGORITHMS]
Method = Literal[META_TRAIN_METHODS]
SupportLoss = Literal[SUPPORT_LOSSES]
# A dataset spec: {"name": <open_dataset name>, **reader options, label?, protocols?}; its keys
# are checked against the reader's signature (savfi_core.study.validate.check_dataset).
DatasetSpec = dict


def param(default: Any = MISSING, *, example: Any = MISSING, doc: str = "", origin: str = "section",
          minimum: float | None = None, nonempty: bool = False, grid_default: str | None = None) -> Any:
    """A stage parameter. ``grid_default``: the field is required by the stage function, but a
    grid may leave it out (the expansion fills it, e.g. pretrain.seed from the grid's seeds)."""
    metadata = {"example": default if example is MISSING else example, "doc": doc, "origin": origin,
                "minimum": minimum, "nonempty": nonempty, "grid_default": grid_default}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Stage configs: one per notebook
# --------------------------------------------------------------------------------------------

def _backbone():
    return param(example="sepconv", origin="job", doc="a registered backbone (savfi_core.backbones.list_models())")


def _size():
    return param(example="tiny", origin="job", doc="'tiny' or 'paper'")


def _output_dir(stage: str):
    return param(example=f"results/manual/{stage}", origin="job", doc="where the stage writes its files")


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    backbone: str = _backbone()
    size: Size = _size()
    weights: Optional[str] = param(None, doc='starting weights: None (random), "default" (shipped) or a checkpoint path')
    dataset: DatasetSpec = param(example={"name": "clips", "split": "train"}, doc="training data (open_dataset spec)")
    val_dataset: Optional[DatasetSpec] = param(None, example={"name": "clips", "split": "test"})
    steps: int = param(example=20, minimum=1, doc="optimizer steps")
    batch_size: int = param(example=4, minimum=1)
    lr: Optional[float] = param(None, minimum=0, doc="None: the backbone's original optimizer and learning rate")
    optimizer: Optional[Literal["adam", "adamax"]] = param(None)
    seed: int = param(example=0, minimum=0, grid_default="the grid's first seed")
    val_every: int = param(0, example=10, minimum=0, doc="validate every so many steps (0: never)")
    options: dict = param({}, example={"crop_size": 64}, doc="further keyword arguments of savfi_core.train.pretrain")
    output_dir: str = _output_dir("pretrain")


@dataclass(frozen=True, kw_only=True)
class MetaTrainConfig:
    backbone: str = _backbone()
    size: Size = _size()
    weights: Optional[str] = param(None, origin="job", doc='the initialization: "default" (shipped), a checkpoint path, or None')
    method: Method = param(example="maml", origin="job", doc='the algorithm (maml_cycle: with the cycle inner loss; maml_2nd: second order), or "retrained"')
    meta_config: dict = param(
        example={"algorithm": "maml", "inner_steps": 1, "inner_lr": 1e-4, "inner_rule": "adam", "first_order": True,
                 "outer_lr": 1e-5, "outer_optimizer": "adam"}, origin="job", doc="fields of savfi_core.meta.MetaConfig")
    dataset: DatasetSpec = param(example={"name": "clips", "split": "train"})
    val_dataset: Optional[DatasetSpec] = param(None, example={"name": "clips", "split": "test"})
    steps: int = param(example=4, minimum=1, doc="outer steps")
    batch_size: int = param(example=2, minimum=1)
    val_every: int = param(0, minimum=0)
    seed: int = param(example=0, minimum=0, origin="job")
    options: dict = param({}, example={"crop_size": 64, "val_limit": 2}, doc="further keyword arguments of savfi_core.train.meta_train")
    output_dir: str = _output_dir("meta_train")


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    backbone: str = _backbone()
    size: Size = _size()
    weights: Optional[str] = param(None, origin="job")
    protocols: list[Protocol] = param(example=["baseline", "finetune"], origin="job", nonempty=True)
    checkpoints: dict[str, str] = param({}, origin="job", doc='method -> meta_checkpoint.pt of meta_train.ipynb, e.g. {"maml": ".../meta_checkpoint.pt"}')
    meta_configs: dict[str, dict] = param({}, example={"finetune": {"inner_steps": 1, "inner_lr": 1e-4, "inner_rule": "adam"}},
                                          origin="job", doc="method -> MetaConfig fields; 'finetune': the test-time fine-tuning")
    datasets: list[DatasetSpec] = param(example=[{"name": "clips", "split": "test"}], nonempty=True)
    inner_steps: list[int] = param(example=[1, 2], minimum=1, nonempty=True, doc="test-time inner steps; the first is the headline")
    seed: Optional[int] = param(None, origin="job", minimum=0)
    max_samples: Optional[int] = param(None, example=3, minimum=1, doc="evaluate the first so many samples (None: all)")
    qualitative: int = param(2, example=1, minimum=0, doc="samples saved as PNG crops")
    output_dir: str = _output_dir("evaluate")


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    evaluation_dirs: list[str] = param([], origin="job", doc="folders of evaluate.ipynb runs; empty: every results/<grid_name>/evaluate-*")
    grid_name: str = param("quick", origin="job")
    baseline: Literal[METHOD_ORDER] = param("baseline", doc="the method gains are measured against")
    qualitative: int = param(3, minimum=0, doc="sequences in the qualitative figures")
    output_dir: str = _output_dir("report")


STAGE_CONFIGS: dict[str, type] = {
    "pretrain": PretrainConfig, "meta_train": MetaTrainConfig, "evaluate": EvaluateConfig, "report": ReportConfig,
}
assert tuple(STAGE_CONFIGS) == STAGES


def stage_fields(stage: str, origin: str | None = None) -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(STAGE_CONFIGS[stage]) if origin is None or field.metadata["origin"] == origin]


# --------------------------------------------------------------------------------------------
# Grid sections: the section fields of a stage config + the keys that steer the expansion
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LauncherConfig:
    """How a training job's process starts (``savfi_core.study.execute``): ``python``, one
    process; ``torchrun``, ``python -m torch.distributed.run --standalone --nproc_per_node=N``
    on the node that runs the job, each rank a share of every batch
    (``savfi_core.train.distributed``). Not part of the job's hash: the processes compute the
    same batches; a job interrupted under another ``nproc_per_node`` refuses to resume."""

    kind: Literal[LAUNCHERS] = param("python", doc="python (one process) or torchrun")
    nproc_per_node: int = param(1, minimum=1, doc="torchrun processes (one per GPU with CUDA, else CPU processes)")


_LAUNCHER_DOC = "how the job starts: {kind: torchrun, nproc_per_node: N} for a torchrun group (default one process)"

SECTION_ONLY_FIELDS: dict[str, list[tuple[str, Any, Any]]] = {
    "pretrain": [("launcher", Optional[LauncherConfig], param(None, doc=_LAUNCHER_DOC))],
    "meta_train": [
        ("launcher", Optional[LauncherConfig], param(None, doc=_LAUNCHER_DOC)),
        ("algorithms", list[Algorithm], param(example=list(ALGORITHMS), doc="one meta_train job per algorithm and seed")),
        ("support_losses", list[SupportLoss], param(["triplets"], nonempty=True,
                                                    doc="inner losses of meta-training: each algorithm is trained with each "
                                                        "('cycle' gives the methods maml_cycle, ...)")),
        ("second_order", list[str], param([], doc="methods of a first-order config also meta-trained with second-order "
                                                  "gradients, as methods of their own (maml -> maml_2nd)")),
        ("retrained", bool, param(True, doc="also re-train (meta-training with 0 inner steps) when protocol retrained is asked")),
        ("config", dict, param(doc="MetaConfig fields shared by the algorithms (and by test-time fine-tuning)")),
        ("per_algorithm", dict[str, dict], param({}, doc="method (maml, maml_cycle, ..., 'retrained', or the test-time "
                                                          "protocols 'finetune' and 'cycle') -> MetaConfig fields over config")),
    ],
    "evaluate": [("protocols", list[Protocol], param(nonempty=True))],
    "report": [],
}


def _copy_field(field: dataclasses.Field) -> dataclasses.Field:
    return dataclasses.field(default=field.default, default_factory=field.default_factory, metadata=field.metadata)


def _section_class(stage: str) -> type:
    import typing

    hints = typing.get_type_hints(STAGE_CONFIGS[stage])
    shared = [(field.name, hints[field.name], _copy_field(field)) for field in stage_fields(stage, "section")]
    return dataclasses.make_dataclass(f"{STAGE_CONFIGS[stage].__name__[:-6]}Section", shared + SECTION_ONLY_FIELDS[stage],
                                      frozen=True, kw_only=True)


SECTIONS: dict[str, type] = {stage: _section_class(stage) for stage in STAGES}


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    """The top level of a grid file."""

    backbones: list[str] = param(nonempty=True)
    seeds: list[int] = param(minimum=0, nonempty=True)
    evaluate: dict = param()  # an EvaluateSection, checked by savfi_core.study.validate
    name: str = param("")
    description: str = param("")
    notebooks: dict[Literal[STAGES], str] = param({}, doc="stage -> notebook path (relative to the grid file)")
    validate: bool = param(True, doc="false: skip the checks against savfi_core (only the tests' fake notebooks)")
    size: Size = param("tiny")
    weights: Optional[str] = param(None)
    pretrain: Optional[dict] = param(None)
    meta_train: Optional[dict] = param(None)
    report: Optional[dict] = param(None)
    per_backbone: dict[str, dict] = param({}, doc="backbone -> overrides of size, weights and the training/evaluation sections")


PER_BACKBONE_KEYS = ("size", "weights", "pretrain", "meta_train", "evaluate")
