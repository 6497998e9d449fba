"""A checked grid expanded into notebook jobs with dependencies, in dependency order.

Stages and their dependencies (one papermill execution of one notebook per job)::

    pretrain-<backbone>                      (only when the grid has a `pretrain` section)
      -> meta_train-<backbone>-<method>-seed<k>   method: each algorithm, and `retrained`
      -> evaluate-<backbone>-pretrained            (baseline and fine-tune protocols)
         evaluate-<backbone>-seed<k>               (re-trained and meta-trained checkpoints)
      -> report                                    (tables and figures from every evaluation)

A job's parameters are the fields of its stage config (``savfi_core.study.schema``): the section
fields come from the backbone's view of the grid as they are, the job fields are set here.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from savfi_core.study.loader import GridError
from savfi_core.study.schema import SECTIONS, stage_fields
from savfi_core.study.validate import CheckedGrid, check_grid, check_meta_config, with_defaults
from savfi_core.vocabulary import FROM_STARTING_WEIGHTS, SECOND_ORDER_SUFFIX, meta_method

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Job:
    """One papermill execution.

    parameters: plain values injected into the notebook's `parameters` cell (hashed as given).
    inputs: parameter name -> where the value comes from upstream, resolved to absolute paths at
        run time: ``(job_id, relative_file)``, a list of those, or a dict name -> those. An empty
        relative file means the upstream job's folder itself.
    depends_on: ids of jobs that must finish first (every job named in ``inputs`` is one).
    publish: copy the job's outputs into the grid folder as well (the report).
    launcher: the section's ``launcher`` (``savfi_core.study.schema.LauncherConfig`` fields) or
        None for one process; how ``savfi_core.study.execute`` starts the job, not hashed.
    """

    job_id: str
    stage: str
    notebook: Path
    parameters: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    publish: bool = False
    launcher: dict[str, Any] | None = None

    @property
    def processes(self) -> int:
        """How many processes the job runs as (torchrun's ``nproc_per_node``, else 1)."""
        if self.launcher and self.launcher.get("kind") == "torchrun":
            return int(self.launcher.get("nproc_per_node", 1))
        return 1


def load_grid(path) -> CheckedGrid:
    """Read and check a grid file (``savfi_core.study.validate.check_grid``)."""
    return check_grid(path)


def notebook_path(grid: CheckedGrid, stage: str) -> Path:
    """``notebooks/<stage>.ipynb``, or the grid's ``notebooks`` override (relative to the grid file)."""
    override = grid.top["notebooks"].get(stage)
    if override is None:
        return REPO_ROOT / "notebooks" / f"{stage}.ipynb"
    path = Path(override)
    return path if path.is_absolute() else Path(grid.source).resolve().parent / path


def section_parameters(stage: str, section: dict) -> dict[str, Any]:
    """The section fields of a stage config, as the backbone's view of the grid has them."""
    return {item.name: section.get(item.name) for item in stage_fields(stage, "section")}


def _methods(meta_train: dict | None, protocols: list[str]) -> dict[str, dict]:
    """method -> meta config: one per algorithm and support loss (``maml``, ``maml_cycle``), and
    'retrained' (0 inner steps: meta-training without an inner loop is re-training on the query
    frames)."""
    if meta_train is None:
        return {}
    per_algorithm = meta_train["per_algorithm"]
    if "support_loss" in meta_train["config"]:
        raise GridError("meta_train.config.support_loss: the inner losses of meta-training are listed in "
                        "meta_train.support_losses (each gives its own methods, e.g. maml and maml_cycle), "
                        "and the test-time protocols finetune and cycle choose their own")
    methods = {}
    for support_loss in meta_train["support_losses"]:
        for algorithm in meta_train["algorithms"]:
            name = meta_method(algorithm, support_loss)
            chosen = {"support_loss": support_loss} if support_loss != "triplets" else {}
            methods[name] = meta_train["config"] | {"algorithm": algorithm} | chosen | per_algorithm.get(name, {})
    unknown = sorted(set(meta_train["second_order"]) - set(methods))
    if unknown:
        raise GridError(f"meta_train.second_order names methods not in the grid: {unknown} (the grid's methods: {sorted(methods)})")
    for name in meta_train["second_order"]:
        if methods[name].get("first_order", False) is not True:
            raise GridError(f"meta_train.second_order: {name} is already second order (its config has first_order "
                            f"{methods[name].get('first_order', False)!r}); list only first-order methods")
        methods[name + SECOND_ORDER_SUFFIX] = methods[name] | {"first_order": False} | per_algorithm.get(name + SECOND_ORDER_SUFFIX, {})
    stray = sorted(set(per_algorithm) - set(methods) - {"retrained", *TEST_TIME_PROTOCOLS})
    if stray:
        raise GridError(f"meta_train.per_algorithm names methods not in the grid: {stray} (the grid's methods: "
                        f"{sorted(methods)}, and retrained, finetune, cycle)")
    if "retrained" in protocols and meta_train["retrained"]:
        methods["retrained"] = meta_train["config"] | {"algorithm": "maml", "inner_steps": 0} | per_algorithm.get("retrained", {})
    return methods


# The test-time protocols that adapt the starting weights, and what their inner loop is.
TEST_TIME_PROTOCOLS = {"finetune": {"algorithm": "maml"}, "cycle": {"algorithm": "maml", "support_loss": "cycle"}}


def test_time_configs(meta_train: dict | None, protocols: list[str]) -> dict[str, dict]:
    """finetune / cycle -> their meta config: the shared ``meta_train.config`` (steps, rule,
    inner_lr), the protocol's inner loop, and ``meta_train.per_algorithm.<protocol>`` over it."""
    shared = (meta_train or {}).get("config", {})
    overrides = (meta_train or {}).get("per_algorithm", {})
    return {name: shared | fixed | overrides.get(name, {}) for name, fixed in TEST_TIME_PROTOCOLS.items() if name in protocols}


def _backbone_jobs(grid: CheckedGrid, backbone: str, validate: bool) -> tuple[list[Job], list[str]]:
    view, seeds = grid.views[backbone], grid.top["seeds"]
    where = lambda key: grid.where[(backbone, key)]  # noqa: E731
    common = {"backbone": backbone, "size": view["size"]}
    start = {"weights": view["weights"]}
    inputs: dict[str, Any] = {}
    after: tuple[str, ...] = ()
    jobs: list[Job] = []

    if view["pretrain"] is not None:
        job_id = f"pretrain-{backbone}"
        parameters = {**common, **section_parameters("pretrain", view["pretrain"])}
        parameters["seed"] = seeds[0] if parameters["seed"] is None else parameters["seed"]
        jobs.append(Job(job_id, "pretrain", notebook_path(grid, "pretrain"), parameters, launcher=view["pretrain"].get("launcher")))
        start, inputs, after = {}, {"weights": (job_id, "checkpoint.pt")}, (job_id,)  # downstream starts from it

    meta_train, evaluate = view["meta_train"], view["evaluate"]
    protocols = evaluate["protocols"]
    trained = [p for p in protocols if p not in FROM_STARTING_WEIGHTS]
    if trained and meta_train is None:
        raise GridError(f"{where('evaluate.protocols')}: protocols {trained} need a meta_train section")
    if "meta" in protocols and not meta_train["algorithms"]:
        raise GridError(f"{where('meta_train.algorithms')}: protocol 'meta' needs at least one algorithm")
    methods = _methods(meta_train, protocols)
    # Fine-tuning at test time (plain or cycle): the shared inner rule and steps, no meta-training.
    adapting_configs = test_time_configs(meta_train, protocols)
    if validate:
        for config in adapting_configs.values():
            check_meta_config(config, where("meta_train.config") if meta_train else where("evaluate.protocols"))

    evaluations = []
    evaluate_common = {**common, **section_parameters("evaluate", evaluate)}
    from_start = [p for p in protocols if p in FROM_STARTING_WEIGHTS]
    if from_start:
        job_id = f"evaluate-{backbone}-pretrained"
        parameters = {**evaluate_common, **start, "protocols": from_start, "checkpoints": {}, "seed": None,
                      "meta_configs": adapting_configs}
        jobs.append(Job(job_id, "evaluate", notebook_path(grid, "evaluate"), parameters, dict(inputs), after))
        evaluations.append(job_id)

    wanted = [m for m in methods if ("retrained" if m == "retrained" else "meta") in protocols]
    for seed in seeds:
        checkpoints = {}
        for method in wanted:
            job_id = f"meta_train-{backbone}-{method}-seed{seed}"
            parameters = {**common, **start, **section_parameters("meta_train", meta_train),
                          "method": method, "meta_config": methods[method], "seed": seed}
            jobs.append(Job(job_id, "meta_train", notebook_path(grid, "meta_train"), parameters, dict(inputs), after,
                            launcher=meta_train.get("launcher")))
            checkpoints[method] = (job_id, "meta_checkpoint.pt")
        if checkpoints:
            job_id = f"evaluate-{backbone}-seed{seed}"
            parameters = {**evaluate_common, **start, "protocols": trained, "seed": seed,
                          "meta_configs": {method: methods[method] for method in checkpoints}}
            depends = after + tuple(upstream for upstream, _ in checkpoints.values())
            jobs.append(Job(job_id, "evaluate", notebook_path(grid, "evaluate"), parameters,
                            {**inputs, "checkpoints": checkpoints}, depends))
            evaluations.append(job_id)
    return jobs, evaluations


def expand_grid(grid: CheckedGrid) -> list[Job]:
    """Jobs of a checked grid, every job after its dependencies."""
    validate = grid.top["validate"]
    jobs: list[Job] = []
    evaluations: list[str] = []
    for backbone in grid.top["backbones"]:
        backbone_jobs, backbone_evaluations = _backbone_jobs(grid, backbone, validate)
        jobs += backbone_jobs
        evaluations += backbone_evaluations
    if grid.top["report"] is not None:
        report = with_defaults(dict(grid.top["report"]), SECTIONS["report"])
        parameters = {"grid_name": grid.name, **section_parameters("report", report)}
        inputs = {"evaluation_dirs": [(job_id, "") for job_id in evaluations]}
        jobs.append(Job("report", "report", notebook_path(grid, "report"), parameters, inputs, tuple(evaluations), publish=True))
    ids = [job.job_id for job in jobs]
    duplicates = sorted({job_id for job_id in ids if ids.count(job_id) > 1})
    if duplicates:
        raise GridError(f"{grid.source}: duplicate job ids {duplicates}")
    for job in jobs:
        if not job.notebook.is_file():
            raise GridError(f"{grid.source}: job {job.job_id}: notebook not found: {job.notebook}")
    return jobs


def select_jobs(jobs: list[Job], patterns: Iterable[str] | None) -> list[Job]:
    """Jobs whose id matches any pattern (fnmatch; a pattern without wildcards matches as a
    substring), plus everything they depend on, in the original order."""
    patterns = list(patterns or [])
    if not patterns:
        return list(jobs)
    globs = [p if any(c in p for c in "*?[") else f"*{p}*" for p in patterns]
    by_id = {job.job_id: job for job in jobs}
    wanted: set[str] = set()
    stack = [job.job_id for job in jobs if any(fnmatch.fnmatchcase(job.job_id, g) for g in globs)]
    if not stack:
        raise GridError(f"--only {patterns}: no job matches; job ids look like {jobs[0].job_id!r}")
    while stack:
        job_id = stack.pop()
        if job_id not in wanted:
            wanted.add(job_id)
            stack.extend(by_id[job_id].depends_on)
    return [job for job in jobs if job.job_id in wanted]

