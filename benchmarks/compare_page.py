"""How long the comparison page takes to show a newly chosen sequence of 448x256 frames.

    python benchmarks/compare_page.py [--sequences 8]

The crops are the Vimeo-90K test septuplets in ../shared/data (448x256): ground truth im4, and as
the two "methods" frame averaging of im3 and im5 and the previous frame im3, indexed as an
evaluation job's crops.csv. Voila serves compare.ipynb on them; Debian's chromium (playwright)
picks each sequence in turn and the clock runs from the choice until the page shows that
sequence's PSNR line and a new figure. Prints a table (and the server-side redraw time alone).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAVFI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def write_crops(folder: Path, count: int) -> Path:
    """An evaluate-* folder with crops.csv over the first ``count`` test septuplets."""
    root = SHARED_DATA / "vimeo_septuplet"
    names = (root / "sep_testlist.txt").read_text().split()[:count]
    evaluation = folder / "evaluate-vimeo-benchmark"
    (evaluation / "crops").mkdir(parents=True)
    rows = []
    for name in names:
        frames = {index: np.asarray(Image.open(root / "sequences" / name / f"im{index}.png").convert("RGB")) for index in (3, 4, 5)}
        panels = {"gt": frames[4], "baseline": ((frames[3].astype(np.uint16) + frames[5]) // 2).astype(np.uint8), "previous": frames[3]}
        for panel, image in panels.items():
            relative = f"crops/{name.replace('/', '-')}_{panel}.png"
            Image.fromarray(image).save(evaluation / relative)
            rows.append(dict(backbone="frames", dataset="vimeo", sequence=name, seed=0, panel=panel, path=relative))
    pd.DataFrame(rows).to_csv(evaluation / "crops.csv", index=False)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=8)
    arguments = parser.parse_args(argv)
    from savfi_core.compare import CropLibrary, comparison_widget
    from savfi_core.compare_page import chromium, serving, write_page_notebook
    from savfi_core.report import load_crop_index

    with tempfile.TemporaryDirectory(prefix="savfi-compare-bench-") as scratch:
        scratch = Path(scratch)
        results = write_crops(scratch / "results", arguments.sequences)
        library = CropLibrary(load_crop_index(sorted(results.glob("evaluate-*"))))
        sequences = library.sequences("vimeo")
        shape = library.image("vimeo", sequences[0], "frames", "gt").shape

        box = comparison_widget(library)  # the same redraw, without browser and websocket
        server = []
        for sequence in sequences[1:] + sequences[:1]:
            started = time.perf_counter()
            box.controls["sequence"].value = sequence
            server.append(time.perf_counter() - started)

        load_before = os.getloadavg()[0]
        notebook = write_page_notebook(results, scratch)
        page_times = []
        with serving(notebook, scratch / "voila.log") as url, chromium(scratch / "profile", viewport={"width": 1100, "height": 1400}) as browser:
            page = browser.new_page()
            page.goto(url, timeout=60_000)
            figure, psnr_line, select = page.locator("img.savfi-figure"), page.locator(".savfi-psnr"), page.locator(".savfi-sequence select")
            figure.wait_for(state="visible", timeout=120_000)
            for sequence in sequences[1:] + sequences[:1]:
                before, text_before = figure.screenshot(), psnr_line.inner_text()
                started = time.perf_counter()
                select.select_option(sequence)
                while psnr_line.inner_text() == text_before or figure.screenshot() == before:
                    if time.perf_counter() - started > 30:
                        raise TimeoutError(f"sequence {sequence} not shown within 30 s")
                    time.sleep(0.02)
                page_times.append(time.perf_counter() - started)
        print(f"comparison page benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} logical cores, load average before {load_before:.2f}; frames {shape[1]}x{shape[0]}, "
              f"{len(sequences)} sequences, Python {sys.version.split()[0]}\n")
        print("| what | median s | max s | n |\n|---|---|---|---|")
        print(f"| page: pick a sequence -> its PSNR line and new figure shown (chromium, Voila) | {statistics.median(page_times):.2f} | {max(page_times):.2f} | {len(page_times)} |")
        print(f"| server: widget redraw alone (read 3 PNGs, plot, PSNR; PNG encoded) | {statistics.median(server):.2f} | {max(server):.2f} | {len(server)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
