"""Is motion what the shipped tiny backbones lack? Each is run on the held-out clips twice: as
shipped, and with its motion estimate replaced by RIFE HD v3's, everything after it (masks,
refinement, synthesis) left as shipped.

    python benchmarks/teacher_motion.py > benchmarks/teacher-motion-cpu.md

RIFE's motion is its symmetric displacement s = (F_t->1 - F_t->0) / 2 at the middle frame
(``savfi_core.train.distill``), computed on the padded frames the backbone sees, and put where
the backbone's own estimate enters its synthesis, in the backbone's convention:

- DVF: its voxel flow d = s (the flow channels of ``conv4``, before the tanh; its mask is kept);
- Super-SloMo, RRIN: F_0->1 = 2 s, F_1->0 = -2 s as the output of the flow U-Net (``flowComp``,
  ``Flow_L``); the refinement U-Nets still run on it;
- DAIN: F_0->1 = 2 s, F_1->0 = -2 s as PWC-Net's output (at its 1/4 resolution, area-averaged);
  depth projection, adaptive warping and the rectification still run on it;
- SepConv: the kernels that sample frame0 at x - s and frame1 at x + s bilinearly, halved (its
  13 taps reach 6 px: larger motion is clamped to 6), so its synthesis is a plain blend of the
  two warped frames;
- CAIN: none (its motion is implicit in its channels), not in the table.

A further row needs no student: the plain blend (frame0(x - s) + frame1(x + s)) / 2 of RIFE's
motion, what the motion alone gives. A diagnosis: nothing is trained or selected on it.
"""
from __future__ import annotations

import argparse
import datetime
import os
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from savfi_core.backbones import create_model
from savfi_core.data import open_dataset
from savfi_core.metrics import psnr
from savfi_core.train.distill import teacher_targets
from savfi_core.train.flow_teacher import bilateral_middle

from backbones import machine_description  # benchmarks/backbones.py, beside this script

STUDENTS = ("dain", "dvf", "rrin", "sepconv", "superslomo")


def separable_shift_taps(offset: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """[B,1,H,W] offsets in pixels -> [B,K,H,W] 1-D bilinear weights that sample at that offset
    (tap k is offset k - K//2; offsets beyond the taps are clamped to the outermost one)."""
    support = kernel_size // 2
    position = (support + offset).clamp(0, 2 * support)
    low = position.floor()
    fraction = position - low
    index = torch.arange(kernel_size, dtype=offset.dtype, device=offset.device).view(1, -1, 1, 1)
    high = (low + 1).clamp(max=2 * support)
    return (index == low).to(offset.dtype) * (1 - fraction) + (index == high).to(offset.dtype) * fraction


def with_motion(name: str, model: torch.nn.Module, displacement_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.nn.Module:
    """Make ``model`` (a tiny ``name`` backbone) use ``displacement_of(frame0, frame1)`` [B,2,H,W]
    (pixels, frame0 at x - s, frame1 at x + s) in place of its own motion estimate; returns it."""
    current = {}
    interpolate = model.interpolate

    def interpolate_with_motion(frame0, frame1):
        current["s"] = displacement_of(frame0, frame1)  # the padded frames the network sees
        return interpolate(frame0, frame1)

    def flows_between_inputs():
        return torch.cat([2 * current["s"], -2 * current["s"]], dim=1)

    if name == "superslomo":
        model.flowComp.forward = lambda x: flows_between_inputs()
    elif name == "rrin":
        model.Flow_L.forward = lambda x: flows_between_inputs() / model.config.flow_unit_pixels
    elif name == "dain":
        # decode() sees both directions as one batch [F_0->1 of every item; F_1->0 of every item]
        model.flownets.decode = lambda pyramid, swapped: F.avg_pool2d(
            torch.cat([2 * current["s"], -2 * current["s"]], dim=0), 4) / model.flownets.div_flow
    elif name == "dvf":
        def replace_flow_channels(module, inputs, output):
            unit = model.flow_pixels_per_unit(output)
            output = output.clone()
            output[:, 0:2] = torch.atanh((2 * current["s"] / unit).clamp(-1 + 1e-6, 1 - 1e-6))  # flow = 0.5 tanh(.) * unit
            return output
        model.conv4.register_forward_hook(replace_flow_channels)
    elif name == "sepconv":
        size = model.config.kernel_size
        model.moduleVertical1.forward = lambda x: 0.5 * separable_shift_taps(-current["s"][:, 1:2], size)
        model.moduleHorizontal1.forward = lambda x: separable_shift_taps(-current["s"][:, 0:1], size)
        model.moduleVertical2.forward = lambda x: 0.5 * separable_shift_taps(current["s"][:, 1:2], size)
        model.moduleHorizontal2.forward = lambda x: separable_shift_taps(current["s"][:, 0:1], size)
    else:
        raise ValueError(f"no motion estimate to replace in {name!r}; students: {STUDENTS}")
    model.interpolate = interpolate_with_motion
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(STUDENTS))
    parser.add_argument("--threads", type=int, default=1)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    teacher = create_model("rife_hdv3", weights="default").eval()

    def rife_displacement(frame0, frame1):
        return teacher_targets(teacher, frame0, frame1).displacement

    dataset = open_dataset("clips", split="test")
    students = {name: (create_model(name, size="tiny", weights="default").eval(),
                       with_motion(name, create_model(name, size="tiny", weights="default").eval(), rife_displacement))
                for name in arguments.models}
    rows = []
    with torch.no_grad():
        for index in range(len(dataset)):
            sample = dataset[index]
            middle = sample.target_index
            frame0, target, frame1 = sample.frames[middle - 1][None], sample.frames[middle], sample.frames[middle + 1][None]
            average = float(psnr(((frame0 + frame1) / 2)[0], target))
            targets = teacher_targets(teacher, frame0, frame1)
            row = {"scene": str(sample.name).split(":")[0], "frame averaging": average,
                   "RIFE HD v3": float(psnr(targets.frame[0].clamp(0, 1), target)) - average,
                   "plain blend, RIFE's motion": float(psnr(bilateral_middle(frame0, frame1, targets.displacement)[0].clamp(0, 1), target)) - average}
            for name, (own, replaced) in students.items():
                row[f"{name}, own"] = float(psnr(own(frame0, frame1).pred[0].clamp(0, 1), target)) - average
                row[f"{name}, RIFE's motion"] = float(psnr(replaced(frame0, frame1).pred[0].clamp(0, 1), target)) - average
            rows.append(row)
    table = pd.DataFrame(rows)
    per_scene = table.groupby("scene").mean()
    per_scene.loc["all (mean of 30)"] = table.drop(columns="scene").mean()
    print("# The tiny backbones with RIFE's motion in place of their own: gain over frame averaging (dB)\n")
    print(f"`python benchmarks/teacher_motion.py`, {datetime.date.today().isoformat()}, {machine_description()}, "
          f"{os.cpu_count()} cores. Held-out clips (`open_dataset(\"clips\", split=\"test\")`, query triplet, full frames).\n")
    print("| backbone | " + " | ".join(per_scene.index) + " |")
    print("|---|" + "---:|" * len(per_scene.index))
    print("| frame averaging (dB) | " + " | ".join(f"{value:.3f}" for value in per_scene["frame averaging"]) + " |")
    for column in per_scene.columns[1:]:
        print(f"| {column} | " + " | ".join(f"{value:+.3f}" for value in per_scene[column]) + " |")
    print("\n\"own\": the shipped weights. \"RIFE's motion\": the same weights with RIFE HD v3's symmetric motion put "
          "where the backbone's motion estimate enters its synthesis (see the script's docstring). \"plain blend\": no "
          "network, (frame0(x - s) + frame1(x + s)) / 2 with RIFE's s.")


if __name__ == "__main__":
    main()
