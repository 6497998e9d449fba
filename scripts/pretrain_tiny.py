"""Pretrain one tiny backbone on the embedded clips, then ship its weights with provenance.

Meant to run as one background job on a shared CPU, resumable from its checkpoint:

    nohup .venv/bin/python scripts/pretrain_tiny.py --model dvf --steps 6000 > /tmp/pretrain_dvf.log 2>&1 &

Training data: ``open_dataset("clips", split="train")`` (scenes bikes1, bikes3, bikes5, bikes6,
bunny), and with ``--vimeo-train ROOT`` the Vimeo-90K train septuplets there at ``--vimeo-share``,
and ``--synthetic-share`` of scenes rendered from those frames with known motion; motion-aware
crops. The budget (``--steps``) is fixed in advance and the learning rate follows a cosine decay to
``--min-lr`` over it (``--lr-schedule constant`` for none). The held-out ``clips`` test split
(scenes bikes2, bikes4, carphone) is only monitored every ``--val-every`` steps, mean PSNR beside
frame averaging: nothing is selected or stopped on it. At the end the FINAL checkpoint is scored
once more on the whole test split and written to ``savfi_core/weights/tiny/<model>.pt`` with a
provenance JSON whose ``target_reached`` says whether its gain over frame averaging reached
``--min-gain`` dB (0.3 by default). ``--no-ship`` trains and reports only. The curve stays in
``<checkpoint>.curve.csv``. Rerunning the same command resumes from the checkpoint. SIGTERM stops
the job; the last periodic checkpoint stays valid.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from savfi_core.backbones import count_parameters, create_model, default_weights_path  # noqa: E402
from savfi_core.checkpoint import atomic_save, safe_load  # noqa: E402
from savfi_core.data import MixtureDataset, SyntheticMotionDataset, VimeoDataset, open_dataset  # noqa: E402
from savfi_core.train import curve_path_for, pretrain  # noqa: E402
from savfi_core.train.common import seed_everything, validate_model  # noqa: E402


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="registry name, e.g. dvf")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=64)
    parser.add_argument("--crop-width", type=int, default=None,
                        help="crop width when it differs from --crop-size (the height); DVF's flow is in units of the "
                        "image size, so it must train at the test frames' width")
    parser.add_argument("--crop-candidates", type=int, default=8)
    parser.add_argument("--uniform-crop-fraction", type=float, default=0.5, help="share of each batch cropped uniformly")
    parser.add_argument("--optimizer", choices=["adam", "adamax"], default=None, help="default: the original training's")
    parser.add_argument("--lr", type=float, default=None, help="default: the original training's")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="cosine")
    parser.add_argument("--min-lr", type=float, default=0.0, help="where the cosine schedule ends")
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="linear learning-rate warmup over the first steps, then --lr-schedule (see pretrain's docstring)")
    parser.add_argument("--batchnorm-momentum", type=float, default=None,
                        help="DVF, RRIN with flow_batchnorm: train the frozen BatchNorm with batch statistics, running ones at this momentum "
                        "(savfi_core.backbones.common.batch_statistics_while_training); default: frozen")
    parser.add_argument("--all-triplets", action="store_true",
                        help="train on every consecutive triplet of each septuplet, not only the query one")
    parser.add_argument("--triplet-gaps", type=int, nargs="+", default=[1],
                        help="distances g from the target to each input, triplets (t-g, t+g -> t); 2 doubles the motion")
    parser.add_argument("--flow-teacher-weight", type=float, default=0.0,
                        help="weight of the bilateral block-matching motion target (savfi_core.train.flow_teacher); "
                        "flow backbones only, 0 = none")
    parser.add_argument("--teacher", default=None,
                        help="distil from this backbone with its released weights (rife_hdv3 or rife_v4; "
                        "savfi_core.train.distill): its middle frame on every input pair, its motion for flow students")
    parser.add_argument("--distill-weight", type=float, default=1.0,
                        help="weight of mean|pred - teacher frame|, in the units of the model's own loss (Super-SloMo's "
                        "reconstruction term is 204 * L1, so 204 there matches 1 for an L1-trained network)")
    parser.add_argument("--motion-weight", type=float, default=0.0,
                        help="weight of the teacher's converted motion target (flow students only, 0 = none)")
    parser.add_argument("--pair-batch-size", type=int, default=0,
                        help="adjacent frame pairs (t, t+1) per step, taught by the teacher only")
    parser.add_argument("--scale-range", type=float, nargs=2, default=(1.0, 1.0), metavar=("LOW", "HIGH"),
                        help="random rescaling of each training window before cropping (log-uniform)")
    parser.add_argument("--max-rotation", type=float, default=0.0, help="random rotation in [-x, x] degrees")
    parser.add_argument("--vimeo-train", type=Path, default=None, metavar="ROOT",
                        help="also train on the Vimeo-90K septuplets of ROOT's sep_trainlist.txt (e.g. ../shared/data/"
                        "vimeo_septuplet), drawn at --vimeo-share of the samples (savfi_core.data.MixtureDataset)")
    parser.add_argument("--vimeo-share", type=float, default=0.3,
                        help="share of training samples drawn from --vimeo-train (the clips take the rest)")
    parser.add_argument("--synthetic-share", type=float, default=0.0,
                        help="share of training samples rendered with known layered motion from the training frames "
                        "(savfi_core.data.SyntheticMotionDataset); the real data take the rest at their shares; 0 = none")
    parser.add_argument("--synthetic-max-speed", type=float, default=4.0,
                        help="largest speed of a synthetic layer, pixels per frame at the rendered size")
    parser.add_argument("--config-override", action="append", default=[], metavar="FIELD=VALUE",
                        help="a field of the tiny size config (JSON value), e.g. flow_range_pixels=64 for dvf; "
                        "recorded in the provenance: the shipped weights need the same config")
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--min-gain", type=float, default=0.3,
                        help="dB over frame averaging that counts as the target (recorded as target_reached)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: results/pretrain_tiny/<model>.pt (git-ignored)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from the model weights of another pretrain checkpoint (a second phase, e.g. at a lower lr) "
                             "or of shipped weights (savfi_core/weights/tiny/<model>.pt; their provenance's phases carry on)")
    parser.add_argument("--no-ship", action="store_true", help="train and report, never write the package weights")
    return parser.parse_args(argv)


def machine_description(threads: int) -> dict:
    """CPU model and core count as lscpu reports them, plus the threads this job used."""
    description = {"platform": platform.platform(), "torch": torch.__version__, "torch_threads": threads}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)"):
                description["cpu_model" if key.strip() == "Model name" else "cpu_cores"] = value.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        description["lscpu_error"] = str(error)
    return description


# The code a training run depends on: the package and these scripts, not the shipped weights.
CODE_PATHSPEC = ["savfi_core", "scripts", ":(exclude)savfi_core/weights"]


def git_commit() -> str:
    # the last commit that changed the code (not the shipped weights), so that committing the
    # weights this run writes does not leave the provenance pointing at an older HEAD; the dirty
    # check looks at the same paths, so the suffix and the commit describe the same code
    result = subprocess.run(["git", "log", "-1", "--format=%H", "--", *CODE_PATHSPEC], cwd=REPO_ROOT, capture_output=True, text=True)
    commit = result.stdout.strip() if result.returncode == 0 else "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *CODE_PATHSPEC], cwd=REPO_ROOT, capture_output=True, text=True)
    return commit + ("+uncommitted-changes" if dirty.stdout.strip() else "")


def phase_record_path(checkpoint_path: Path) -> Path:
    """Sidecar of a checkpoint: the command line that trains it and the checkpoint it started from."""
    return checkpoint_path.with_name(checkpoint_path.name + ".phase.json")


def shipped_provenance_path(weights_path: Path) -> Path:
    """The provenance JSON that ``ship`` writes beside a shipped weights file."""
    return weights_path.with_suffix(".json")


def initial_model_weights(init_from: Path) -> dict:
    """The model weights a phase starts from: a pretrain checkpoint's, or shipped weights (a plain
    state_dict with its provenance JSON beside it, e.g. ``savfi_core/weights/tiny/sepconv.pt``)."""
    loaded = safe_load(init_from)
    if isinstance(loaded, dict) and isinstance(loaded.get("state"), dict) and "model" in loaded["state"]:
        return loaded["state"]["model"]
    if isinstance(loaded, dict) and loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        if not shipped_provenance_path(init_from).is_file():
            raise ValueError(f"--init-from {init_from}: a plain state_dict without its provenance "
                             f"{shipped_provenance_path(init_from).name} beside it, so its training history is unknown")
        return loaded
    found = f"keys {sorted(loaded)[:6]}" if isinstance(loaded, dict) else f"a {type(loaded).__name__}"
    raise ValueError(f"--init-from {init_from}: neither a pretrain checkpoint (a dict with state['model']) "
                     f"nor shipped weights (a state_dict of tensors); found {found}")


def earlier_phase_chain(init_from: Path | None) -> list[dict]:
    """Every phase the weights went through before this one, oldest first: each checkpoint's
    steps, wall time, whole training configuration and command line, following the
    ``init_from`` links of the phase records back to a run from scratch. Shipped weights end the
    walk: their provenance already lists their own phases."""
    phases = []
    while init_from is not None:
        earlier = safe_load(init_from)
        if "state" not in earlier:  # shipped weights (initial_model_weights checked the provenance is there)
            shipped = json.loads(shipped_provenance_path(init_from).read_text())
            config_keys = ("batch_size", "crop_size", "optimizer", "lr", "lr_schedule", "min_lr", "warmup_steps", "batchnorm_momentum", "all_triplets", "triplet_gaps",
                           "max_grad_norm", "uniform_crop_fraction", "teacher", "config_overrides", "seed")
            phases[:0] = [*shipped.get("earlier_phases", []),
                          {"checkpoint": init_from.name, "steps": int(shipped["steps"]),
                           "wall_time_seconds": float(shipped["wall_time_seconds"]),
                           "config": {key: shipped[key] for key in config_keys if key in shipped},
                           "command": shipped.get("regenerate", "not recorded")}]
            break
        record_path = phase_record_path(init_from)
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        phases.insert(0, {"checkpoint": init_from.name, "steps": int(earlier["step"]),
                          "wall_time_seconds": round(float(earlier["elapsed_seconds"]), 1),
                          "config": dict(earlier["config"]), "command": record.get("command", "not recorded")})
        init_from = (REPO_ROOT / record["init_from"]) if record.get("init_from") else None  # relative to the repository
    return phases


def ship(model, arguments, checkpoint_path: Path, train_dataset, test_dataset, weights_path: Path | None = None) -> Path:
    """Write the plain state_dict and its provenance JSON (into the package unless
    ``weights_path`` is given); return the .pt path."""
    saved = safe_load(checkpoint_path)
    model.load_state_dict(saved["state"]["model"])
    scores = validate_model(model, test_dataset)  # every sample of the held-out split
    gain = scores["val_psnr"] - scores["val_average_psnr"]
    curve = saved["curve"]
    earlier_phases = earlier_phase_chain(arguments.init_from)
    weights_path = weights_path or default_weights_path(arguments.model, "tiny")
    atomic_save(model.state_dict(), weights_path)
    provenance = {
        "model": arguments.model,
        "size": "tiny",
        "parameters": count_parameters(model),
        "weights": weights_path.name,
        "checkpoint": checkpoint_path.name,  # the training run's checkpoint (and .curve.csv) it came from
        "training_data": training_data_description(arguments, bool(saved["config"].get("all_triplets")), train_dataset),
        "uniform_crop_fraction": arguments.uniform_crop_fraction,
        "test_data": f"savfi embedded clips, split='test' (scenes bikes2, bikes4, carphone; {len(test_dataset)} "
        "non-overlapping septuplets, full frames, query triplet t-1, t+1 -> t)",
        "selection": f"the final checkpoint of a budget fixed in advance ({int(saved['step'])} steps, "
        f"{saved['config'].get('lr_schedule', 'constant')} learning rate); the test split was only monitored "
        f"(every {arguments.val_every} steps), nothing was selected or stopped on it",
        "target_gain_db": arguments.min_gain,
        "target_reached": bool(gain >= arguments.min_gain),
        "steps": int(saved["step"]),
        "earlier_phases": earlier_phases,
        "total_steps": int(saved["step"]) + sum(phase["steps"] for phase in earlier_phases),
        "total_wall_time_seconds": round(float(saved["elapsed_seconds"]) + sum(phase["wall_time_seconds"] for phase in earlier_phases), 1),
        "skipped_steps": int(curve[-1]["skipped_total"]) if curve else 0,
        "batch_size": arguments.batch_size,
        "crop_size": [arguments.crop_size, arguments.crop_width or arguments.crop_size],
        "optimizer": saved["config"]["optimizer"],
        "lr": saved["config"]["lr"],
        "lr_schedule": saved["config"].get("lr_schedule", "constant"),
        "min_lr": saved["config"].get("min_lr", 0.0),
        "warmup_steps": saved["config"].get("warmup_steps") or 0,
        "batchnorm_momentum": saved["config"].get("batchnorm_momentum"),
        "all_triplets": bool(saved["config"].get("all_triplets", False)),
        "triplet_gaps": saved["config"].get("triplet_gaps") or [1],
        "max_grad_norm": arguments.max_grad_norm,
        "flow_teacher": saved["config"].get("flow_teacher"),
        "teacher": saved["config"].get("teacher"),
        "config_overrides": config_overrides(arguments),
        "geometric_augmentation": saved["config"].get("geometric_augmentation"),
        "seed": arguments.seed,
        "wall_time_seconds": round(float(saved["elapsed_seconds"]), 1),
        "machine": machine_description(arguments.threads),
        "git_commit": git_commit(),
        "test_psnr": round(scores["val_psnr"], 4),
        "test_frame_average_psnr": round(scores["val_average_psnr"], 4),
        "test_gain_db": round(gain, 4),
        "psnr_definition": "savfi_core.metrics.psnr (8-bit quantized), mean over the test samples",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "regenerate": f"python scripts/pretrain_tiny.py --model {arguments.model} --steps {int(saved['step'])} "
        f"--batch-size {arguments.batch_size} --crop-size {arguments.crop_size} "
        f"{'--crop-width ' + str(arguments.crop_width) + ' ' if arguments.crop_width else ''}--lr {saved['config']['lr']} "
        f"--optimizer {saved['config']['optimizer']} --seed {arguments.seed} --val-every {arguments.val_every} "
        f"--uniform-crop-fraction {arguments.uniform_crop_fraction} --max-grad-norm {arguments.max_grad_norm} "
        f"--lr-schedule {arguments.lr_schedule} --min-lr {arguments.min_lr}"
        f"{' --warmup-steps ' + str(arguments.warmup_steps) if arguments.warmup_steps else ''}"
        f"{' --batchnorm-momentum ' + str(arguments.batchnorm_momentum) if arguments.batchnorm_momentum is not None else ''}{' --all-triplets' if arguments.all_triplets else ''}"
        f"{' --triplet-gaps ' + ' '.join(map(str, arguments.triplet_gaps)) if arguments.triplet_gaps != [1] else ''}"
        f"{' --flow-teacher-weight ' + str(arguments.flow_teacher_weight) if arguments.flow_teacher_weight else ''}"
        f"{teacher_flags(arguments)}"
        f"{' --init-from ' + str(arguments.init_from) if arguments.init_from else ''}",
    }
    provenance_path = weights_path.with_suffix(".json")
    provenance_path.write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"shipped {weights_path} ({weights_path.stat().st_size / 1e6:.2f} MB) and {provenance_path.name}: "
          f"{scores['val_psnr']:.3f} dB vs frame averaging {scores['val_average_psnr']:.3f} dB "
          f"({gain:+.3f} dB; target {arguments.min_gain} dB {'reached' if gain >= arguments.min_gain else 'NOT reached'})",
          flush=True)
    return weights_path


def config_overrides(arguments) -> dict:
    """``--config-override FIELD=VALUE`` as keyword arguments of ``create_model``."""
    overrides = {}
    for item in arguments.config_override:
        field, separator, value = item.partition("=")
        if not separator:
            raise SystemExit(f"--config-override needs FIELD=VALUE, got {item!r}")
        overrides[field] = json.loads(value)
    return overrides


def teacher_flags(arguments) -> str:
    """The distillation and augmentation options of the command line, for ``regenerate``."""
    flags = ""
    if arguments.teacher:
        flags += (f" --teacher {arguments.teacher} --distill-weight {arguments.distill_weight}"
                  f" --motion-weight {arguments.motion_weight} --pair-batch-size {arguments.pair_batch_size}")
    if tuple(arguments.scale_range) != (1.0, 1.0):
        flags += f" --scale-range {arguments.scale_range[0]} {arguments.scale_range[1]}"
    if arguments.max_rotation:
        flags += f" --max-rotation {arguments.max_rotation}"
    if arguments.vimeo_train is not None:
        flags += f" --vimeo-train {arguments.vimeo_train} --vimeo-share {arguments.vimeo_share}"
    if arguments.synthetic_share > 0:
        flags += f" --synthetic-share {arguments.synthetic_share} --synthetic-max-speed {arguments.synthetic_max_speed}"
    for item in arguments.config_override:
        flags += f" --config-override {item}"
    return flags


def training_data(arguments):
    """The train split of the embedded clips, with ``--vimeo-train``'s septuplets mixed in at
    ``--vimeo-share`` (full frames: the training sampler crops and augments), and with
    ``--synthetic-share`` of scenes rendered from those frames with known motion."""
    clips = open_dataset("clips", split="train", augment=False)
    if not 0.0 <= arguments.synthetic_share < 1.0:
        raise SystemExit(f"--synthetic-share must be in [0, 1), got {arguments.synthetic_share}")
    parts = [(clips, 1.0)]
    if arguments.vimeo_train is not None:
        if not 0.0 < arguments.vimeo_share < 1.0:
            raise SystemExit(f"--vimeo-share must be strictly between 0 and 1, got {arguments.vimeo_share}")
        vimeo = open_dataset("vimeo_septuplet", root=arguments.vimeo_train, split="train", augment=False)
        parts = [(clips, 1.0 - arguments.vimeo_share), (vimeo, arguments.vimeo_share)]
    if arguments.synthetic_share > 0:
        real = parts[0][0] if len(parts) == 1 else MixtureDataset(parts)
        synthetic = SyntheticMotionDataset(real, max_speed=arguments.synthetic_max_speed, seed=arguments.seed)
        parts = [(dataset, share * (1.0 - arguments.synthetic_share)) for dataset, share in parts]
        parts.append((synthetic, arguments.synthetic_share))
    return parts[0][0] if len(parts) == 1 else MixtureDataset(parts)


def training_data_description(arguments, all_triplets: bool, train_dataset) -> str:
    """The provenance's ``training_data``: what the run drew its training windows from, read from
    ``train_dataset`` (what ``training_data`` built for the run: the Vimeo list is not read twice)."""
    parts = train_dataset.datasets if isinstance(train_dataset, MixtureDataset) else [train_dataset]
    triplets = "every consecutive triplet t-1, t+1 -> t of each" if all_triplets else "query triplets t-1, t+1 -> t"
    text = ("savfi embedded clips, split='train' (scenes bikes1, bikes3, bikes5, bikes6, bunny; 256 septuplets, "
            f"{triplets})")
    if arguments.vimeo_train is not None:
        vimeo = next(part for part in parts if isinstance(part, VimeoDataset))
        text += (f" at share {1.0 - arguments.vimeo_share:g}, and Vimeo-90K septuplets of {arguments.vimeo_train} "
                 f"sep_trainlist.txt ({len(vimeo)} septuplets: {', '.join(vimeo.entries)}) at share {arguments.vimeo_share:g}")
    if arguments.synthetic_share > 0:
        synthetic = next(part for part in parts if isinstance(part, SyntheticMotionDataset))
        text += (f"; of all of these {1.0 - arguments.synthetic_share:g}, and {arguments.synthetic_share:g} synthetic "
                 f"septuplets rendered from their frames (savfi_core.data.SyntheticMotionDataset: {synthetic.describe()})")
    return text + ", crops (a share uniform, the rest motion-aware), random horizontal flip and input swap"


def main(argv=None) -> None:
    arguments = parse_arguments(argv)
    torch.set_num_threads(arguments.threads)
    # `kill PID` lands as KeyboardInterrupt: the loop then leaves its last checkpoint untouched.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    checkpoint_path = arguments.checkpoint or REPO_ROOT / "results" / "pretrain_tiny" / f"{arguments.model}.pt"
    train_dataset = training_data(arguments)
    test_dataset = open_dataset("clips", split="test")
    # Seeded before the model exists, so that --seed fixes its initialization too (the loop
    # seeds again for sampling): the provenance's "regenerate" command then reproduces a run.
    seed_everything(arguments.seed)
    model = create_model(arguments.model, size="tiny", **config_overrides(arguments))
    checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    phase_record_path(checkpoint_path).write_text(json.dumps({
        "command": "python scripts/pretrain_tiny.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "init_from": str(arguments.init_from) if arguments.init_from else None,
    }, indent=2) + "\n")
    if arguments.init_from is not None and not checkpoint_path.is_file():
        model.load_state_dict(initial_model_weights(arguments.init_from))
        print(f"initialized from {arguments.init_from}", flush=True)
    print(f"{arguments.model} tiny: {count_parameters(model)} parameters; checkpoint {checkpoint_path}; pid {os.getpid()}", flush=True)
    pretrain(
        model,
        train_dataset,
        steps=arguments.steps,
        batch_size=arguments.batch_size,
        lr=arguments.lr,
        optimizer=arguments.optimizer,
        seed=arguments.seed,
        checkpoint_path=checkpoint_path,
        val_dataset=test_dataset,
        val_every=arguments.val_every,
        checkpoint_every=arguments.checkpoint_every,
        crop_size=(arguments.crop_size, arguments.crop_width) if arguments.crop_width else arguments.crop_size,
        crop_candidates=arguments.crop_candidates,
        uniform_crop_fraction=arguments.uniform_crop_fraction,
        all_triplets=arguments.all_triplets,
        triplet_gaps=tuple(arguments.triplet_gaps),
        max_grad_norm=arguments.max_grad_norm,
        lr_schedule=arguments.lr_schedule,
        min_lr=arguments.min_lr,
        warmup_steps=arguments.warmup_steps,
        batchnorm_momentum=arguments.batchnorm_momentum,
        flow_teacher_weight=arguments.flow_teacher_weight,
        teacher=create_model(arguments.teacher, weights="default") if arguments.teacher else None,
        distill_weight=arguments.distill_weight,
        motion_weight=arguments.motion_weight,
        pair_batch_size=arguments.pair_batch_size,
        scale_range=tuple(arguments.scale_range),
        max_rotation_degrees=arguments.max_rotation,
        progress=True,
        log=lambda message: print(message, flush=True),
    )
    print(f"curve: {curve_path_for(checkpoint_path)}", flush=True)
    if int(safe_load(checkpoint_path)["step"]) < arguments.steps:
        print(f"{arguments.model}: stopped before step {arguments.steps}; rerun the same command to resume", flush=True)
    elif arguments.no_ship:
        print(f"{arguments.model}: --no-ship, package weights left as they are", flush=True)
    else:
        ship(model, arguments, checkpoint_path, train_dataset, test_dataset)


if __name__ == "__main__":
    main()
