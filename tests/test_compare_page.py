"""The comparison page in a real browser: Voila serves compare.ipynb on a tiny real grid's results,
Chromium (Debian's, driven by the PyPI playwright client) changes the sequence, a method and the
wipe, and the test reads the page itself: pixels of the figure's screenshots and the PSNR line.

Where chromium or playwright is missing the test skips with the reason, except under CI (CI set),
where it fails: .ci/run installs both, so a missing browser there is a broken install.
"""
from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from savfi_core.compare import CropLibrary, image_psnr
from savfi_core.compare_page import CHROMIUM, NoEvaluations, check_results, chromium, serving, write_page_notebook
from savfi_core.report import load_crop_index, method_label

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO_ROOT / "results" / "browser" / "compare_page.png"  # copied to docs/figures/ for the README
PSNR_PATTERN = re.compile(r"(.+?): (-?[0-9.]+|inf) dB")


def test_no_evaluations_names_the_command_that_makes_them(tmp_path):
    with pytest.raises(NoEvaluations, match=r"make run"):
        check_results(tmp_path / "quick")
    with pytest.raises(NoEvaluations, match=r"run_all.py --grid params/other.yaml"):
        check_results(tmp_path / "other")


def test_make_compare_prints_the_message_and_exits_nonzero(tmp_path):
    from savfi_core.compare_page import main

    assert main(["--results", str(tmp_path / "quick")]) == 2


def require_browser():
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        problems.append(f"the PyPI playwright client is not importable ({error})")
    if not CHROMIUM.is_file():
        problems.append(f"no {CHROMIUM} (Debian: apt-get install chromium)")
    if problems:
        reason = "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test, but {reason}: .ci/run should have installed it")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def voila_page(tiny_real_grid, tmp_path_factory):
    """Voila serving the page on a free 127.0.0.1 port, stopped with its kernel afterwards."""
    require_browser()
    assert tiny_real_grid["exit_code"] == 0, "the tiny grid failed"
    folder = tmp_path_factory.mktemp("voila")
    notebook = write_page_notebook(tiny_real_grid["folder"], folder)
    with serving(notebook, folder / "voila.log") as url:
        yield {"url": url, "folder": tiny_real_grid["folder"], "log": folder / "voila.log"}


def pixels(locator) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.int16)


def psnr_values(text: str) -> dict[str, str]:
    """{method label: PSNR as printed} from the page's PSNR line."""
    text = text.split(":", 1)[1]  # drop "PSNR against ground truth"
    return {label.strip(" ,"): value for label, value in PSNR_PATTERN.findall(text)}


def expected_psnr(library: CropLibrary, dataset, sequence, backbone, *methods) -> dict[str, str]:
    truth = library.image(dataset, sequence, backbone, "gt")
    return {method_label(m): f"{image_psnr(library.image(dataset, sequence, backbone, m), truth):.2f}" for m in methods}


def wait_until(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page did not show {what} within {timeout:.0f} s")


@pytest.mark.browser
@pytest.mark.slow
def test_page_redraws_for_sequence_method_and_wipe(voila_page, tmp_path_factory):
    library = CropLibrary(load_crop_index(sorted(voila_page["folder"].glob("evaluate-*"))))
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with chromium(profile, viewport={"width": 1100, "height": 1400}, device_scale_factor=1) as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(voila_page["url"], timeout=60_000)
        figure, psnr_line = page.locator("img.savfi-figure"), page.locator(".savfi-psnr")
        figure.wait_for(state="visible", timeout=120_000)  # kernel start and imports

        def select(name):
            return page.locator(f".savfi-{name} select")

        def current(name):
            return select(name).input_value()

        def state():
            return current("dataset"), current("sequence"), current("backbone")

        def shows(expected):
            return psnr_values(psnr_line.inner_text()) == expected

        def new_figure(before):
            after = pixels(figure)
            return after if after.shape != before.shape or np.abs(after - before).max() > 0 else None

        method_a, method_b = current("method-a"), current("method-b")
        assert method_a != method_b
        assert shows(expected_psnr(library, *state(), method_a, method_b)), psnr_line.inner_text()
        first = pixels(figure)

        # another sequence: both PSNRs are the new sequence's, and the picture changed
        dataset, sequence, backbone = state()
        other_sequence = next(s for s in library.sequences(dataset) if s != sequence)
        started = time.monotonic()
        select("sequence").select_option(other_sequence)
        expected = expected_psnr(library, dataset, other_sequence, backbone, method_a, method_b)
        wait_until(lambda: shows(expected), f"the PSNRs {expected} of sequence {other_sequence}")
        second = wait_until(lambda: new_figure(first), "a new figure after the sequence changed")
        print(f"sequence change shown after {time.monotonic() - started:.2f} s")

        # another method B: the one whose PSNR differs most from the current B's
        candidates = [m for m in library.methods(dataset, other_sequence, backbone) if m not in (method_a, method_b)]
        truth = library.image(dataset, other_sequence, backbone, "gt")
        shown_b = float(expected[method_label(method_b)])
        new_b = max(candidates, key=lambda m: abs(image_psnr(library.image(dataset, other_sequence, backbone, m), truth) - shown_b))
        select("method-b").select_option(new_b)
        expected = expected_psnr(library, dataset, other_sequence, backbone, method_a, new_b)
        assert expected[method_label(new_b)] != f"{shown_b:.2f}", "the tiny grid gave two methods the same PSNR"
        wait_until(lambda: shows(expected), f"the PSNRs {expected} after method B became {new_b}")
        third = wait_until(lambda: new_figure(second), "a new figure after method B changed")

        # drag the wipe handle to the far left: only the wipe panel changes (middle row, left
        # column of the 3x3 figure), the PSNRs stay
        slider = page.locator(".savfi-wipe")
        handle, track = slider.locator(".noUi-handle"), slider.locator(".noUi-base")
        start_box, track_box = handle.bounding_box(), track.bounding_box()
        page.mouse.move(start_box["x"] + start_box["width"] / 2, start_box["y"] + start_box["height"] / 2)
        page.mouse.down()
        page.mouse.move(track_box["x"] + 0.1 * track_box["width"], start_box["y"] + start_box["height"] / 2, steps=8)
        page.mouse.up()
        readout = float(slider.locator(".widget-readout").inner_text())
        assert readout < 0.2, f"the wipe slider reads {readout} after the drag"
        fourth = wait_until(lambda: new_figure(third), "a new figure after the wipe moved")
        assert shows(expected), psnr_line.inner_text()
        assert fourth.shape == third.shape
        rows, columns = np.nonzero(np.abs(fourth - third).max(axis=-1))
        height, width = third.shape[:2]
        assert columns.max() < width * 0.4 and rows.min() > height * 0.25 and rows.max() < height * 0.75, (
            f"the wipe changed pixels outside its panel: rows {rows.min()}-{rows.max()} of {height}, "
            f"columns {columns.min()}-{columns.max()} of {width}")

        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
