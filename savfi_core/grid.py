"""A study grid: a YAML file expanded into notebook jobs with dependencies, and how to run them.

The path of a study::

    params/<grid>.yaml --expand_grid--> [Job, ...] --run_jobs--> results/<grid>/<job-id>/

Stages and their dependencies (one papermill execution of one notebook per job)::

    pretrain-<backbone>                      (only when the grid has a `pretrain` section)
      -> meta_train-<backbone>-<method>-seed<k>   method: each algorithm, and `retrained`
      -> evaluate-<backbone>-pretrained            (baseline and fine-tune protocols)
         evaluate-<backbone>-seed<k>               (re-trained and meta-trained checkpoints)
      -> report                                    (tables and figures from every evaluation)

Every job runs in its own subprocess (several Jupyter kernels started from one process race for
ports) and writes into its own folder ``results/<grid>/<job-id>/``: the executed notebook
(``notebook.ipynb``), the resolved parameters (``parameters.yaml``), a log (``log.txt``), the
job record (``job.json``) and whatever the notebook writes (checkpoints, CSV, PNG).

A job is skipped when its record says it finished with the same *job hash*:

    hash = sha256(stage, notebook file content, parameters, [digest of each upstream job's outputs],
                  [digest of the weights file it starts from, the shipped one for ``weights: default``])

so editing a notebook or a parameter, or shipping new weights, reruns that job and everything
downstream, and a rerun after
an interruption continues where it stopped. Code changes inside ``savfi_core`` are not hashed:
rerun with ``--force`` after changing the library.

Parallelism: a thread pool of subprocesses on this machine (``--jobs N``), or a Dask distributed
cluster through ``Client.get_executor()`` (``--executor dask``); the loop below only submits a job
once its dependencies finished, Dask places it on a worker.
"""
from __future__ import annotations

import concurrent.futures
import copy
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from savfi_core.procs import die_with_parent, run_job_process, stop_job_processes
from savfi_core.runlock import held_descriptors

REPO_ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pretrain", "meta_train", "evaluate", "report")
ALGORITHMS = ("maml", "maml++", "metasgd", "l2f")
PROTOCOLS = ("baseline", "retrained", "finetune", "meta")
# Files of a job folder that are bookkeeping, not results: left out of the output digest because
# they hold timestamps and absolute paths.
BOOKKEEPING_FILES = ("notebook.ipynb", "parameters.yaml", "log.txt", "job.json", "run.json", "error.json")

TOP_LEVEL_KEYS = {
    "name", "description", "notebooks", "validate", "backbones", "size", "weights", "seeds",
    "pretrain", "meta_train", "evaluate", "report", "per_backbone",
}
SECTION_KEYS = {
    "pretrain": {"dataset", "val_dataset", "steps", "batch_size", "lr", "optimizer", "seed", "val_every", "weights", "options"},
    "meta_train": {
        "dataset", "val_dataset", "steps", "batch_size", "val_every", "algorithms", "retrained",
        "config", "per_algorithm", "options",
    },
    "evaluate": {"datasets", "protocols", "inner_steps", "max_samples", "qualitative", "options"},
    "report": {"baseline", "qualitative", "options"},
}
REQUIRED_SECTION_KEYS = {
    "pretrain": {"dataset", "steps", "batch_size"},
    "meta_train": {"dataset", "steps", "batch_size", "algorithms", "config"},
    "evaluate": {"datasets", "protocols", "inner_steps"},
    "report": set(),
}


class GridError(ValueError):
    """The grid file is malformed; the message names the file and the offending key."""


# --------------------------------------------------------------------------------------------
# The job model
# --------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One papermill execution.

    parameters: plain values injected into the notebook's `parameters` cell (hashed as given).
    inputs: parameter name -> where the value comes from upstream, resolved to absolute paths at
        run time: ``(job_id, relative_file)``, a list of those, or a dict name -> those. An empty
        relative file means the upstream job's folder itself.
    depends_on: ids of jobs that must finish first (every job named in ``inputs`` is one).
    publish: copy the job's outputs into the grid folder as well (the report).
    """

    job_id: str
    stage: str
    notebook: Path
    parameters: dict[str, Any]
    inputs: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    publish: bool = False


def _deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_grid(path: str | os.PathLike) -> dict[str, Any]:
    """Read a grid YAML file; the grid's name defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file not found: {path}")
    try:
        grid = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(grid, dict):
        raise GridError(f"{path}: a grid must be a mapping, got {type(grid).__name__}")
    grid = dict(grid)
    grid.setdefault("name", path.stem)
    grid["_path"] = str(path)
    return grid


def _check_keys(where: str, mapping: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    if not isinstance(mapping, dict):
        raise GridError(f"{where} must be a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise GridError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    missing = sorted(set(required) - set(mapping))
    if missing:
        raise GridError(f"{where}: missing keys {missing}")


def _notebook_path(grid: dict, stage: str, source: str) -> Path:
    """The notebook of a stage: ``notebooks/<stage>.ipynb`` or the grid's ``notebooks`` override.

    Relative overrides are relative to the grid file's folder.
    """
    overrides = grid.get("notebooks") or {}
    if stage in overrides:
        path = Path(overrides[stage])
        if not path.is_absolute():
            path = Path(grid["_path"]).resolve().parent / path
    else:
        path = REPO_ROOT / "notebooks" / f"{stage}.ipynb"
    return path


def _backbone_view(grid: dict, backbone: str, source: str) -> dict:
    """The grid as seen by one backbone: ``per_backbone[backbone]`` merged over the top level."""
    overrides = (grid.get("per_backbone") or {}).get(backbone, {})
    _check_keys(f"{source}: per_backbone.{backbone}", overrides, TOP_LEVEL_KEYS - {"name", "per_backbone", "backbones", "notebooks"})
    view = _deep_merge({k: v for k, v in grid.items() if k != "per_backbone"}, overrides)
    for section in ("pretrain", "meta_train", "evaluate", "report"):
        if view.get(section) is not None:
            _check_keys(f"{source}: {section} (backbone {backbone})", view[section], SECTION_KEYS[section], REQUIRED_SECTION_KEYS[section])
    return view


def _validate_meta_config(config: dict, where: str) -> None:
    """Check a meta-learning configuration with ``savfi_core.meta.MetaConfig`` itself."""
    if config.get("algorithm") not in ALGORITHMS:
        raise GridError(f"{where}: algorithm must be one of {ALGORITHMS}, got {config.get('algorithm')!r}")
    try:
        from savfi_core.meta import MetaConfig
    except ImportError as error:  # the meta package is a dependency of the study; say so plainly
        raise GridError(f"{where}: cannot validate the meta config, savfi_core.meta is not importable: {error}") from error
    try:
        MetaConfig.from_dict(dict(config))
    except Exception as error:
        raise GridError(f"{where}: invalid meta config {config}: {error}") from error


def expand_grid(grid: dict[str, Any], validate_configs: bool = True) -> list[Job]:
    """Expand a loaded grid into jobs in dependency order (every job after its dependencies).

    validate_configs: check backbone names against the registry and meta configs with
        ``MetaConfig.from_dict``; a grid can turn this off with ``validate: false`` (only the
        grids of fake notebooks in the tests of the machinery do).
    """
    source = grid.get("_path", "<grid>")
    _check_keys(source, {k: v for k, v in grid.items() if k != "_path"}, TOP_LEVEL_KEYS, {"backbones", "seeds", "evaluate"})
    backbones = list(grid["backbones"])
    seeds = list(grid["seeds"])
    if not backbones:
        raise GridError(f"{source}: backbones is empty")
    if not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise GridError(f"{source}: seeds must be a non-empty list of integers, got {seeds!r}")
    unknown_overrides = sorted(set(grid.get("per_backbone") or {}) - set(backbones))
    if unknown_overrides:
        raise GridError(f"{source}: per_backbone names backbones not in the grid: {unknown_overrides}")
    validate_configs = validate_configs and grid.get("validate", True)
    if validate_configs:
        from savfi_core.backbones import list_models

        known = list_models()
        unknown = [name for name in backbones if name not in known]
        if unknown:
            raise GridError(f"{source}: unknown backbones {unknown}; registered: {known}")
    for stage in grid.get("notebooks") or {}:
        if stage not in STAGES:
            raise GridError(f"{source}: notebooks.{stage}: unknown stage; stages are {STAGES}")

    jobs: list[Job] = []
    evaluation_jobs: list[str] = []
    for backbone in backbones:
        view = _backbone_view(grid, backbone, source)
        size = view.get("size", "tiny")
        common = {"backbone": backbone, "size": size}
        weights_parameter: dict[str, Any] = {"weights": view.get("weights")}
        weights_input: dict[str, Any] = {}
        start_dependencies: tuple[str, ...] = ()

        pretrain = view.get("pretrain")
        if pretrain is not None:
            job_id = f"pretrain-{backbone}"
            parameters = {
                **common,
                "weights": pretrain.get("weights"),
                "dataset": pretrain["dataset"],
                "val_dataset": pretrain.get("val_dataset"),
                "steps": pretrain["steps"],
                "batch_size": pretrain["batch_size"],
                "lr": pretrain.get("lr"),
                "optimizer": pretrain.get("optimizer"),
                "seed": pretrain.get("seed", seeds[0]),
                "val_every": pretrain.get("val_every", 0),
                "options": pretrain.get("options", {}),
            }
            jobs.append(Job(job_id, "pretrain", _notebook_path(grid, "pretrain", source), parameters))
            # Everything downstream starts from the freshly pretrained checkpoint.
            weights_parameter = {}
            weights_input = {"weights": (job_id, "checkpoint.pt")}
            start_dependencies = (job_id,)

        meta_train = view.get("meta_train")
        evaluate = view["evaluate"]
        protocols = list(evaluate["protocols"])
        unknown_protocols = [p for p in protocols if p not in PROTOCOLS]
        if unknown_protocols:
            raise GridError(f"{source}: evaluate.protocols: unknown {unknown_protocols}; choose from {PROTOCOLS}")
        needs_training = any(p in ("retrained", "meta") for p in protocols)
        if needs_training and meta_train is None:
            raise GridError(f"{source}: protocols {protocols} need a meta_train section")
        if not isinstance(evaluate["inner_steps"], list) or not evaluate["inner_steps"]:
            raise GridError(f"{source}: evaluate.inner_steps must be a non-empty list of test-time step counts")

        methods: dict[str, dict] = {}  # method -> meta config
        if meta_train is not None:
            algorithms = list(meta_train["algorithms"])
            unknown_algorithms = [a for a in algorithms if a not in ALGORITHMS]
            if unknown_algorithms:
                raise GridError(f"{source}: meta_train.algorithms: unknown {unknown_algorithms}; choose from {ALGORITHMS}")
            per_algorithm = meta_train.get("per_algorithm") or {}
            stray = sorted(set(per_algorithm) - set(algorithms) - {"retrained"})
            if stray:
                raise GridError(f"{source}: meta_train.per_algorithm names methods not in the grid: {stray}")
            for algorithm in algorithms:
                methods[algorithm] = _deep_merge(meta_train["config"], {"algorithm": algorithm, **per_algorithm.get(algorithm, {})})
            if "retrained" in protocols and meta_train.get("retrained", True):
                # Re-training = meta-training with no inner loop (the contract: 0 inner steps
                # reduces meta-training to re-training on the query frames).
                methods["retrained"] = _deep_merge(
                    meta_train["config"], {"algorithm": "maml", "inner_steps": 0, **per_algorithm.get("retrained", {})}
                )
            if "meta" in protocols and not algorithms:
                raise GridError(f"{source}: protocol 'meta' needs at least one algorithm")
        # Fine-tuning at test time uses the shared inner rule and steps, without meta-training.
        finetune_config = _deep_merge((meta_train or {}).get("config", {}), {"algorithm": "maml"})
        if validate_configs:
            for method, config in methods.items():
                _validate_meta_config(config, f"{source}: meta_train ({backbone}, {method})")
            if "finetune" in protocols:
                _validate_meta_config(finetune_config, f"{source}: fine-tune config ({backbone})")

        evaluate_common = {
            **common,
            "datasets": evaluate["datasets"],
            "inner_steps": evaluate["inner_steps"],
            "max_samples": evaluate.get("max_samples"),
            "qualitative": evaluate.get("qualitative", 2),
            "options": evaluate.get("options", {}),
        }
        pretrained_protocols = [p for p in protocols if p in ("baseline", "finetune")]
        if pretrained_protocols:
            job_id = f"evaluate-{backbone}-pretrained"
            parameters = {
                **evaluate_common,
                **weights_parameter,
                "protocols": pretrained_protocols,
                "meta_configs": {"finetune": finetune_config} if "finetune" in protocols else {},
                "checkpoints": {},
                "seed": None,
            }
            jobs.append(Job(job_id, "evaluate", _notebook_path(grid, "evaluate", source), parameters, dict(weights_input), start_dependencies))
            evaluation_jobs.append(job_id)

        trained_methods = [m for m in methods if (m == "retrained" and "retrained" in protocols) or (m != "retrained" and "meta" in protocols)]
        for seed in seeds:
            checkpoint_inputs = {}
            for method in trained_methods:
                job_id = f"meta_train-{backbone}-{method}-seed{seed}"
                parameters = {
                    **common,
                    **weights_parameter,
                    "method": method,
                    "meta_config": methods[method],
                    "dataset": meta_train["dataset"],
                    "val_dataset": meta_train.get("val_dataset"),
                    "steps": meta_train["steps"],
                    "batch_size": meta_train["batch_size"],
                    "val_every": meta_train.get("val_every", 0),
                    "seed": seed,
                    "options": meta_train.get("options", {}),
                }
                jobs.append(Job(job_id, "meta_train", _notebook_path(grid, "meta_train", source), parameters, dict(weights_input), start_dependencies))
                checkpoint_inputs[method] = (job_id, "meta_checkpoint.pt")
            if checkpoint_inputs:
                job_id = f"evaluate-{backbone}-seed{seed}"
                parameters = {
                    **evaluate_common,
                    **weights_parameter,
                    "protocols": [p for p in protocols if p in ("retrained", "meta")],
                    "meta_configs": {method: methods[method] for method in checkpoint_inputs},
                    "seed": seed,
                }
                inputs = {**weights_input, "checkpoints": checkpoint_inputs}
                depends = start_dependencies + tuple(upstream for upstream, _ in checkpoint_inputs.values())
                jobs.append(Job(job_id, "evaluate", _notebook_path(grid, "evaluate", source), parameters, inputs, depends))
                evaluation_jobs.append(job_id)

    report = grid.get("report")
    if report is not None:
        _check_keys(f"{source}: report", report, SECTION_KEYS["report"])
        parameters = {
            "grid_name": grid["name"],
            "baseline": report.get("baseline", "baseline"),
            "qualitative": report.get("qualitative", 3),
            "options": report.get("options", {}),
        }
        inputs = {"evaluation_dirs": [(job_id, "") for job_id in evaluation_jobs]}
        jobs.append(Job("report", "report", _notebook_path(grid, "report", source), parameters, inputs, tuple(evaluation_jobs), publish=True))

    ids = [job.job_id for job in jobs]
    duplicates = sorted({job_id for job_id in ids if ids.count(job_id) > 1})
    if duplicates:
        raise GridError(f"{source}: duplicate job ids {duplicates}")
    for job in jobs:
        if not job.notebook.is_file():
            raise GridError(f"{source}: job {job.job_id}: notebook not found: {job.notebook}")
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


# --------------------------------------------------------------------------------------------
# Hashes and records
# --------------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_digest(job_dir: Path) -> str:
    """sha256 over (relative path, content hash) of every output file of a finished job."""
    digest = hashlib.sha256()
    for path in sorted(p for p in job_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(job_dir).as_posix()
        if relative in BOOKKEEPING_FILES:
            continue
        digest.update(relative.encode() + b"\0" + _file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def read_record(job_dir: Path) -> dict[str, Any] | None:
    path = job_dir / "job.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a record cut off by an interruption: the job simply runs again


def write_record(job_dir: Path, record: dict[str, Any]) -> None:
    """Write job.json atomically (a reader never sees half a record)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    temporary = job_dir / "job.json.tmp"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(temporary, job_dir / "job.json")


def _input_references(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, tuple):
        return [value]
    if isinstance(value, list):
        return [reference for item in value for reference in _input_references(item)]
    if isinstance(value, dict):
        return [reference for item in value.values() for reference in _input_references(item)]
    raise TypeError(f"input reference must be (job_id, file), a list or a dict of them, got {value!r}")


def _weights_file_digest(parameters: dict[str, Any]) -> str | None:
    """sha256 of the weights file a job starts from (``weights: default`` is the shipped file of
    its backbone and size), so that new shipped weights rerun the jobs that read them."""
    weights = parameters.get("weights")
    if not isinstance(weights, str):
        return None
    if weights == "default":
        from savfi_core.backbones import default_weights_path

        if "backbone" not in parameters:
            return None
        path = Path(default_weights_path(parameters["backbone"], parameters.get("size", "tiny")))
    else:
        path = Path(weights)
    return _file_sha256(path) if path.is_file() else None


def job_hash(job: Job, upstream_digests: dict[str, str]) -> str:
    """sha256 of stage, notebook content, parameters and the upstream outputs (see module doc)."""
    payload = {
        "stage": job.stage,
        "notebook": _file_sha256(job.notebook),
        "parameters": job.parameters,
        "inputs": {name: [list(ref) for ref in _input_references(value)] for name, value in sorted(job.inputs.items())},
        "upstream": {job_id: upstream_digests[job_id] for job_id in sorted(job.depends_on)},
    }
    weights = _weights_file_digest(job.parameters)
    if weights is not None:  # only then, so hashes of jobs without a weights file stay as they were
        payload["weights_file"] = weights
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def resolve_inputs(job: Job, grid_dir: Path) -> dict[str, Any]:
    """Parameters with every upstream reference replaced by an absolute path."""

    def resolve(value: Any) -> Any:
        if isinstance(value, tuple):
            upstream, relative = value
            path = (grid_dir / upstream / relative) if relative else (grid_dir / upstream)
            return str(path.resolve())
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return {key: resolve(item) for key, item in value.items()}

    return {**job.parameters, **{name: resolve(value) for name, value in job.inputs.items()}}


# --------------------------------------------------------------------------------------------
# Executing one job (in a subprocess, possibly on a Dask worker)
# --------------------------------------------------------------------------------------------


def execute_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job's notebook in a fresh Python subprocess; return its outcome.

    spec: job_id, notebook, job_dir, parameters, working_directory, threads (see ``run_jobs``).
    Returns {'status': 'done'|'failed', 'error': str|None, 'seconds': float}. Runs wherever it is
    called: in a thread here, or on a Dask worker that sees the same file system.
    """
    job_dir = Path(spec["job_dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "run.json").write_text(json.dumps(spec, indent=2, default=str))
    (job_dir / "parameters.yaml").write_text(yaml.safe_dump(spec["parameters"], sort_keys=True))
    (job_dir / "error.json").unlink(missing_ok=True)
    environment = dict(os.environ)
    threads = str(spec.get("threads", 1))
    # One job = one process; keep BLAS/OpenMP from spawning a thread per core in each of them.
    environment.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MPLBACKEND="Agg")
    start = time.perf_counter()
    with open(job_dir / "log.txt", "w") as log:
        # Own process group, dies with this runner, keeps the run lock held while it lives.
        returncode = run_job_process(
            [spec.get("python", sys.executable), "-m", "savfi_core.grid", str(job_dir / "run.json")],
            stdout=log, env=environment, cwd=spec["working_directory"], keep_descriptors=held_descriptors(),
        )
    seconds = time.perf_counter() - start
    if returncode == 0:
        return {"status": "done", "error": None, "seconds": seconds}
    error_file = job_dir / "error.json"
    if error_file.is_file():
        error = json.loads(error_file.read_text())["error"]
    else:  # the subprocess died before it could write its error (killed, import failure)
        tail = (job_dir / "log.txt").read_text().strip().splitlines()[-15:]
        error = f"exit code {returncode}; log tail:\n" + "\n".join(tail)
    return {"status": "failed", "error": error, "seconds": seconds}


def _execute_notebook_here(run_file: Path) -> int:
    """Body of the subprocess: one papermill execution; errors go to error.json."""
    import papermill

    watching = die_with_parent()
    print(f"job process {os.getpid()}: stops with its runner ({watching})", file=sys.stderr, flush=True)
    spec = json.loads(Path(run_file).read_text())
    job_dir = Path(spec["job_dir"])
    try:
        papermill.execute_notebook(
            spec["notebook"], str(job_dir / "notebook.ipynb"), parameters=spec["parameters"],
            kernel_name=spec.get("kernel_name"), progress_bar=False, log_output=True,
            cwd=spec["working_directory"],
        )
    except Exception as error:  # papermill saves the executed notebook (with the failing cell) first
        if type(error).__name__ == "PapermillExecutionError":
            message = f"{error.ename}: {error.evalue} (cell {error.exec_count})"
        else:
            message = f"{type(error).__name__}: {error}"
        (job_dir / "error.json").write_text(json.dumps({"error": message, "traceback": traceback.format_exc()}, indent=2))
        print(f"job failed: {message}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Running a list of jobs
# --------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """Outcome of ``run_jobs``: job id -> status ('done', 'cached', 'failed', 'skipped')."""

    statuses: dict[str, str]
    errors: dict[str, str]

    @property
    def failed(self) -> list[str]:
        return [job_id for job_id, status in self.statuses.items() if status == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [job_id for job_id, status in self.statuses.items() if status == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def job_status(job: Job, grid_dir: Path, digests: dict[str, str]) -> tuple[str, str | None]:
    """('cached', hash) when the job finished with an unchanged hash, else ('pending', hash|None).

    ``digests`` holds output digests of upstream jobs known to be current; the hash is None when
    an upstream job is not current (so this one must run after it anyway).
    """
    if any(upstream not in digests for upstream in job.depends_on):
        return "pending", None
    current = job_hash(job, digests)
    record = read_record(grid_dir / job.job_id)
    if record and record.get("status") == "done" and record.get("hash") == current:
        return "cached", current
    return "pending", current


def plan(jobs: list[Job], grid_dir: Path) -> dict[str, str]:
    """Status of every job without running anything ('cached' or 'pending'), for --dry-run."""
    digests: dict[str, str] = {}
    statuses = {}
    for job in jobs:
        status, _ = job_status(job, grid_dir, digests)
        statuses[job.job_id] = status
        if status == "cached":
            digests[job.job_id] = read_record(grid_dir / job.job_id)["output_digest"]
    return statuses


def _publish(job_dir: Path, grid_dir: Path) -> None:
    """Copy a job's outputs (not its bookkeeping) into the grid folder."""
    for path in job_dir.iterdir():
        if path.name in BOOKKEEPING_FILES:
            continue
        target = grid_dir / path.name
        if path.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)


def run_jobs(
    jobs: list[Job],
    grid_dir: str | os.PathLike,
    *,
    executor: concurrent.futures.Executor,
    force: bool = False,
    threads: int = 1,
    working_directory: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> RunSummary:
    """Run ``jobs`` (in dependency order) on ``executor``; skip cached ones unless ``force``.

    A job is submitted once all its dependencies are done or cached; when one fails, its
    dependants (transitively) are marked skipped and the others continue.
    progress(job_id, status) is called as each job is settled.
    """
    grid_dir = Path(grid_dir).resolve()
    working_directory = str(Path(working_directory or os.getcwd()).resolve())
    by_id = {job.job_id: job for job in jobs}
    unknown = {dep for job in jobs for dep in job.depends_on if dep not in by_id}
    digests: dict[str, str] = {}
    for dep in sorted(unknown):  # dependencies outside the selection must already be done
        record = read_record(grid_dir / dep)
        if record and record.get("status") == "done":
            digests[dep] = record["output_digest"]
    statuses: dict[str, str] = {}
    errors: dict[str, str] = {}
    hashes: dict[str, str] = {}
    running: dict[concurrent.futures.Future, str] = {}
    waiting = [job.job_id for job in jobs]

    def settle(job_id: str, status: str) -> None:
        statuses[job_id] = status
        if progress:
            progress(job_id, status)

    def blocked_by(job: Job) -> str | None:
        for dep in job.depends_on:
            if statuses.get(dep) in ("failed", "skipped") or (dep not in by_id and dep not in digests):
                return dep
        return None

    while waiting or running:
        for job_id in list(waiting):
            job = by_id[job_id]
            blocker = blocked_by(job)
            if blocker is not None:
                waiting.remove(job_id)
                reason = f"upstream {blocker} " + (statuses.get(blocker) or "has not run")
                errors[job_id] = reason
                write_record(grid_dir / job_id, {"job_id": job_id, "status": "skipped", "error": reason})
                settle(job_id, "skipped")
                continue
            if any(dep not in digests for dep in job.depends_on):
                continue  # still waiting for a dependency
            waiting.remove(job_id)
            status, current = job_status(job, grid_dir, digests)
            job_dir = grid_dir / job_id
            if status == "cached" and not force:
                digests[job_id] = read_record(job_dir)["output_digest"]
                if job.publish:
                    _publish(job_dir, grid_dir)
                settle(job_id, "cached")
                continue
            previous = read_record(job_dir)
            # Keep the folder of an interrupted attempt with the same hash, so that training
            # notebooks resume from their checkpoint; anything else starts from an empty folder.
            if force or previous is None or previous.get("hash") != current or previous.get("status") == "done":
                shutil.rmtree(job_dir, ignore_errors=True)
            hashes[job_id] = current
            write_record(job_dir, {"job_id": job_id, "stage": job.stage, "status": "queued", "hash": current,
                                   "queued": time.strftime("%Y-%m-%dT%H:%M:%S")})
            spec = {
                "job_id": job_id,
                "notebook": str(job.notebook),
                "job_dir": str(job_dir),
                "parameters": {**resolve_inputs(job, grid_dir), "output_dir": str(job_dir)},
                "working_directory": working_directory,
                "threads": threads,
                "kernel_name": kernel_name,
                "python": sys.executable,
            }
            running[executor.submit(execute_job, spec)] = job_id
        if not running:
            continue
        try:
            finished, _ = concurrent.futures.wait(list(running), return_when=concurrent.futures.FIRST_COMPLETED)
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM): start nothing more. Queued jobs are cancelled (their folders
            # say so); running jobs are in process groups of their own, stopped here, so none
            # outlives the runner. Rerunning continues here.
            for future in running:
                future.cancel()
            stop_job_processes()
            for future, job_id in running.items():
                write_record(grid_dir / job_id, {"job_id": job_id, "stage": by_id[job_id].stage, "status": "interrupted",
                                                 "hash": hashes[job_id]})
            raise
        for future in finished:
            job_id = running.pop(future)
            job = by_id[job_id]
            job_dir = grid_dir / job_id
            try:
                outcome = future.result()
            except Exception as error:  # the executor itself failed (e.g. a Dask worker died)
                outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}", "seconds": None}
            record = {"job_id": job_id, "stage": job.stage, "hash": hashes[job_id], "status": outcome["status"],
                      "error": outcome["error"], "seconds": outcome["seconds"],
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "parameters": job.parameters}
            if outcome["status"] == "done":
                record["output_digest"] = digests[job_id] = output_digest(job_dir)
                if job.publish:
                    _publish(job_dir, grid_dir)
            else:
                errors[job_id] = outcome["error"]
            write_record(job_dir, record)
            settle(job_id, outcome["status"])
    return RunSummary(statuses, errors)


if __name__ == "__main__":  # the subprocess side of execute_job
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m savfi_core.grid JOB_DIR/run.json")
    raise SystemExit(_execute_notebook_here(Path(sys.argv[1])))
