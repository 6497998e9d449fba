"""compare.ipynb's functions, headless: wipe, error maps, zoom, the full figure and the widget."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from savfi_core.compare import CropLibrary, absolute_error, comparison_widget, crop_window, image_psnr, plot_comparison, wipe


def images(seed=0, shape=(40, 60, 3)):
    generator = np.random.default_rng(seed)
    truth = generator.random(shape).astype(np.float32)
    return truth, np.clip(truth + 0.02, 0, 1), np.clip(truth + 0.1, 0, 1)


def test_wipe_takes_left_columns_from_a_and_the_rest_from_b():
    truth, first, second = images()
    composite = wipe(first, second, 0.25)
    assert np.array_equal(composite[:, :15], first[:, :15]) and np.array_equal(composite[:, 15:], second[:, 15:])
    assert np.array_equal(wipe(first, second, 0.0), second) and np.array_equal(wipe(first, second, 1.0), first)
    with pytest.raises(ValueError, match="shapes"):
        wipe(first, second[:, :10], 0.5)


def test_error_map_psnr_and_zoom_window():
    truth, first, second = images()
    assert absolute_error(first, truth).shape == (40, 60)
    assert image_psnr(first, truth) > image_psnr(second, truth)
    rows, columns = crop_window((40, 60), 1.0, 0.0, 4.0)
    assert (rows.start, rows.stop, columns.start, columns.stop) == (0, 10, 45, 60)  # clamped inside the image


def test_comparison_figure_renders_headless(tmp_path):
    truth, first, second = images()
    figure = plot_comparison(truth, first, second, "Baseline", "MAML", wipe_position=0.3, zoom=2)
    titles = [axis.get_title() for axis in figure.axes]
    assert any(title.startswith("Baseline:") and "dB" in title for title in titles)
    figure.savefig(tmp_path / "compare.png")
    assert (tmp_path / "compare.png").stat().st_size > 10_000


def test_widget_lists_choices_and_redraws_on_change(tmp_path):
    truth, first, second = images()
    rows = []
    for sequence in ("s1", "s2"):
        for panel, image in {"gt": truth, "input0": truth, "input1": truth, "baseline": second, "maml": first}.items():
            path = tmp_path / f"{sequence}_{panel}.png"
            Image.fromarray((image * 255).astype(np.uint8)).save(path)
            rows.append(dict(backbone="sepconv", dataset="clips", sequence=sequence, seed=0, panel=panel, path=str(path)))
    library = CropLibrary(pd.DataFrame(rows))
    box = comparison_widget(library)
    controls = box.controls
    assert list(controls["sequence"].options) == ["s1", "s2"]
    assert list(controls["method_a"].options) == ["baseline", "maml"]
    assert (controls["method_a"].value, controls["method_b"].value) == ("baseline", "maml")
    first_figure = box.state["figure"]
    controls["wipe"].value = 0.9  # any change redraws
    assert box.state["figure"] is not first_figure
    titles = [axis.get_title() for axis in box.state["figure"].axes]
    assert any(title.startswith("MAML:") for title in titles)


def test_widget_redraws_once_per_change_and_states_both_psnrs(tmp_path, monkeypatch):
    generator = np.random.default_rng(1)
    rows = []
    for number, sequence in enumerate(("s1", "s2")):
        truth = generator.random((24, 32, 3))
        for panel, noise in {"gt": 0.0, "baseline": 0.02 * (number + 1), "maml": 0.05}.items():
            path = tmp_path / f"{sequence}_{panel}.png"
            Image.fromarray((np.clip(truth + noise, 0, 1) * 255).astype(np.uint8)).save(path)
            rows.append(dict(backbone="sepconv", dataset="clips", sequence=sequence, panel=panel, path=str(path)))
    library = CropLibrary(pd.DataFrame(rows))
    box = comparison_widget(library)
    import savfi_core.compare as compare

    drawn = []
    original = compare.plot_comparison
    monkeypatch.setattr(compare, "plot_comparison", lambda *args, **kwargs: drawn.append(args) or original(*args, **kwargs))
    box.controls["sequence"].value = "s2"
    assert len(drawn) == 1
    truth, first, second = (library.image("clips", "s2", "sepconv", panel) for panel in ("gt", "baseline", "maml"))
    assert f"{image_psnr(first, truth):.2f} dB" in box.psnr_line.value and f"{image_psnr(second, truth):.2f} dB" in box.psnr_line.value
    assert "savfi-psnr" in box.psnr_line._dom_classes and "savfi-wipe" in box.controls["wipe"]._dom_classes
