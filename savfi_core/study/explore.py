"""What the datasets look like: motion and frame-averaging PSNR per sample, and frame strips
(``notebooks/explore_data.ipynb``)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from savfi_core.study.stages import open_spec, spec_label


def explore_datasets(specs: list[dict], *, output_dir: str | os.PathLike, samples_per_dataset: int = 3) -> pd.DataFrame:
    """Per sample: motion (mean |frame(t+1) - frame(t-1)|) and the PSNR of frame averaging
    ((frame(t-1) + frame(t+1)) / 2 against frame(t)); one PNG per dataset with the valid frames
    of its first ``samples_per_dataset`` samples. Returns the per-sample table (also motion.csv)."""
    from savfi_core.metrics import psnr
    from savfi_core.report import pyplot

    plt = pyplot()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        dataset, label = open_spec(spec), spec_label(spec)
        for index in range(len(dataset)):
            sample = dataset[index]
            t = sample.target_index
            before, after, target = sample.frames[t - 1], sample.frames[t + 1], sample.frames[t]
            rows.append({"dataset": label, "sequence": sample.name, "height": int(target.shape[-2]), "width": int(target.shape[-1]),
                         "motion": float((after - before).abs().mean()), "average_psnr": psnr((before + after) / 2, target)})
        shown = [dataset[i] for i in range(min(samples_per_dataset, len(dataset)))]
        if not shown:
            continue
        frames = len(shown[0].frames)
        figure, axes = plt.subplots(len(shown), frames, figsize=(1.8 * frames, 1.4 * len(shown) + 0.4), squeeze=False)
        for row, sample in enumerate(shown):
            for position in range(frames):
                axis = axes[row][position]
                axis.axis("off")
                if bool(sample.valid[position]):
                    axis.imshow(sample.frames[position].permute(1, 2, 0).clamp(0, 1).numpy())
                role = "target" if position == sample.target_index else ("" if sample.valid[position] else "(missing)")
                axis.set_title(f"{sample.name} [{position}] {role}" if position == 0 else f"[{position}] {role}", fontsize=6)
        figure.suptitle(label)
        figure.tight_layout()
        figure.savefig(output / f"{label.replace('/', '-')}.png", dpi=100)
        plt.close(figure)
    table = pd.DataFrame(rows)
    table.to_csv(output / "motion.csv", index=False)
    return table
