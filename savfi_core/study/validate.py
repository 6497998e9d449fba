"""A grid file checked against the schema, per backbone, before any job exists.

``check_grid`` returns a :class:`CheckedGrid`: the top level and, for each backbone, its view
(the sections with that backbone's ``per_backbone`` overrides merged in). Every value is checked
where it is written, so an error names the key path and line of the YAML that holds it:

* structure and types from :mod:`savfi_core.study.schema` (unknown keys refused);
* with ``validate: true`` (the default), the values against savfi_core itself: registered
  backbones and sizes, weights files that exist, dataset names and their readers' keyword
  arguments, ``options`` against the keyword arguments of the training functions they go to,
  meta-learning configs through ``MetaConfig``.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from savfi_core.study.checks import check_fields, check_keywords, check_value, refuse_unknown
from savfi_core.study.loader import GridError, Location, load_yaml
from savfi_core.study.schema import PER_BACKBONE_KEYS, SECTIONS, GridConfig
from savfi_core.vocabulary import PROTOCOLS

# Keyword arguments of the training functions that the stage functions set themselves: not options.
STAGE_SET_KEYWORDS = ("model", "learner", "train_dataset", "steps", "batch_size", "lr", "optimizer", "seed",
                      "checkpoint_path", "val_dataset", "val_every", "log", "stop_when")
TRAINING_FUNCTIONS = {"pretrain": ("savfi_core.train", "pretrain"), "meta_train": ("savfi_core.train", "meta_train")}


@dataclass
class CheckedGrid:
    source: str
    top: dict[str, Any]
    views: dict[str, dict[str, Any]] = field(default_factory=dict)  # backbone -> {section: values, size, weights}
    where: dict[tuple[str, str], Location] = field(default_factory=dict)  # (backbone, key) -> Location of its value

    @property
    def name(self) -> str:
        return self.top["name"]


def with_defaults(values: dict, cls: type) -> dict:
    """Fill the fields of ``cls`` missing from ``values`` with their defaults (in place)."""
    for item in dataclasses.fields(cls):
        if item.name not in values:
            if item.default is not dataclasses.MISSING:
                values[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                values[item.name] = item.default_factory()
    return values


def _merge_section(base: dict, override: dict) -> dict:
    """A section with a per-backbone override over it; mapping values (config, options, dataset
    specs) are merged one level deep with dict union, everything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merged[key] | value if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def check_grid(path: str | Path) -> CheckedGrid:
    """Load and check a grid file (see the module docstring); GridError on the first problem."""
    data, marks = load_yaml(path)
    top_where = Location(str(path), marks)
    top = check_fields(data, GridConfig, top_where)
    top.setdefault("name", Path(path).stem)
    with_defaults(top, GridConfig)
    top["_path"] = str(path)
    sections = {}
    for stage, cls in SECTIONS.items():
        if top.get(stage) is not None:
            sections[stage] = check_fields(top[stage], cls, top_where.at(stage))
    science = top["validate"]
    if science:
        _check_backbones(top["backbones"], top_where.at("backbones"))
    per_backbone = top["per_backbone"]
    for backbone in per_backbone:
        if backbone not in top["backbones"]:
            raise GridError(f"{top_where.at('per_backbone', backbone)}: backbone {backbone!r} is not in backbones {top['backbones']}")
    grid = CheckedGrid(str(path), top)
    for backbone in top["backbones"]:
        override = per_backbone.get(backbone, {})
        override_where = top_where.at("per_backbone", backbone)
        if not isinstance(override, dict):
            raise override_where.error("a mapping", override)
        refuse_unknown(override, PER_BACKBONE_KEYS, override_where)
        view: dict[str, Any] = {}
        for key in ("size", "weights"):
            if key in override:
                view[key] = check_value(override[key], typing.get_type_hints(GridConfig)[key], override_where.at(key))
                grid.where[(backbone, key)] = override_where.at(key)
            else:
                view[key] = top[key]
                grid.where[(backbone, key)] = top_where.at(key)
        for stage, cls in SECTIONS.items():
            base = sections.get(stage)
            if stage in override and stage != "report":
                checked = check_fields(override[stage], cls, override_where.at(stage), partial=base is not None)
                view[stage] = _merge_section(base or {}, checked)
                for key in checked:
                    grid.where[(backbone, f"{stage}.{key}")] = override_where.at(stage, key)
            else:
                view[stage] = base
            if view[stage] is not None:
                with_defaults(view[stage], cls)
                _check_launcher(view[stage].get("launcher"), grid.where.get((backbone, f"{stage}.launcher"))
                                or top_where.at(stage, "launcher"))
            for key in (view[stage] or {}):
                grid.where.setdefault((backbone, f"{stage}.{key}"), top_where.at(stage, key))
        if science:
            _check_view(backbone, view, lambda key, b=backbone: grid.where[(b, key)])
        grid.views[backbone] = view
    return grid


def _check_launcher(launcher: dict | None, where: Location) -> None:
    """Several processes need torchrun: ``kind: python`` is one process."""
    if launcher and launcher.get("kind", "python") == "python" and launcher.get("nproc_per_node", 1) != 1:
        raise GridError(f"{where}: nproc_per_node {launcher['nproc_per_node']} needs kind: torchrun "
                        f"(kind: python runs one process)")


def _check_backbones(backbones: list[str], where: Location) -> None:
    from savfi_core.backbones import list_models

    known = list_models()
    for index, name in enumerate(backbones):
        if name not in known:
            raise where.at(index).error(f"a registered backbone, one of {known}", name)


def _check_view(backbone: str, view: dict, where) -> None:
    """The checks against savfi_core of one backbone's view."""
    _check_weights(view["weights"], backbone, view["size"], where("weights"))
    for stage in ("pretrain", "meta_train"):
        section = view.get(stage)
        if section is None:
            continue
        for key in ("dataset", "val_dataset"):
            if section.get(key) is not None:
                check_dataset(section[key], where(f"{stage}.{key}"))
        module, name = TRAINING_FUNCTIONS[stage]
        function = getattr(__import__(module, fromlist=[name]), name)
        check_keywords(section.get("options", {}), function, where(f"{stage}.options"), exclude=STAGE_SET_KEYWORDS)
    if view.get("pretrain") is not None:
        _check_weights(view["pretrain"].get("weights"), backbone, view["size"], where("pretrain.weights"))
    if view.get("meta_train") is not None:
        section = view["meta_train"]
        check_meta_config(section["config"], where("meta_train.config"))
        for method, values in section.get("per_algorithm", {}).items():
            check_meta_config(section["config"] | values, where("meta_train.per_algorithm").at(method))
    evaluate = view.get("evaluate")
    if evaluate is not None:
        for index, spec in enumerate(evaluate["datasets"]):
            check_dataset(spec, where("evaluate.datasets").at(index))


def _check_weights(weights: str | None, backbone: str, size: str, where: Location) -> None:
    if weights is None:
        return
    if weights == "default":
        from savfi_core.backbones import default_weights_path
        from savfi_core.backbones.carrier import CarrierWeightsError

        try:
            path = Path(default_weights_path(backbone, size))
        except CarrierWeightsError as error:  # the carrier package of the authors' release is missing
            raise where.error(f"{size} weights of {backbone} that can be loaded ({error})", weights) from None
        if not path.is_file():
            raise where.error(f"shipped {size} weights for {backbone} (none at {path})", weights)
        return
    if not Path(weights).is_file():
        raise where.error(f'null, "default" or the path of an existing weights file (from {Path.cwd()})', weights)


@functools.cache
def _dataset_readers() -> dict[str, Any]:
    from savfi_core.data import DATASETS

    return DATASETS


def check_dataset(spec: Any, where: Location) -> dict:
    """A dataset spec: ``name`` a registered dataset, ``label``/``protocols`` of the study, every
    other key a keyword argument of that dataset's reader, of the type its signature gives."""
    readers = _dataset_readers()
    if not isinstance(spec, dict):
        raise where.error("a dataset spec {name: ..., options}", spec)
    if "name" not in spec:
        raise GridError(f"{where}: missing key 'name' (one of {sorted(readers)})")
    name = check_value(spec["name"], Literal[tuple(sorted(readers))], where.at("name"))
    check_value(spec.get("label", ""), str, where.at("label"))
    check_value(spec.get("protocols", []), list[Literal[PROTOCOLS]], where.at("protocols"))
    options = {key: value for key, value in spec.items() if key not in ("name", "label", "protocols")}
    return check_keywords(options, readers[name], where, exclude=("kind",))


def check_meta_config(values: Any, where: Location) -> None:
    """Types through MetaConfig's own annotations, then its own checks (``__post_init__``)."""
    from savfi_core.meta import MetaConfig

    check_fields(values, MetaConfig, where, partial=True)
    try:
        MetaConfig.from_dict({"algorithm": "maml", **values} if "algorithm" not in values else values)
    except (TypeError, ValueError) as error:
        raise GridError(f"{where}: {error}") from error
