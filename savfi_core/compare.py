"""Side-by-side comparison of two methods' interpolated frames (the engine of compare.ipynb).

The images come from the evaluation jobs' saved crops (``crops.csv`` index in each
``results/<grid>/evaluate-*`` folder, see ``savfi_core.report.load_crop_index``): panels
``input0``, ``input1``, ``gt`` and one per method (``baseline``, ``finetune``, ``maml``, ...).

Everything here draws with matplotlib and works headless; ``comparison_widget`` only wires
ipywidgets controls to ``plot_comparison``.
"""
from __future__ import annotations

import html
import io
from typing import Any

import numpy as np
import pandas as pd

from savfi_core.report import method_label, read_image


def absolute_error(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel error map [H,W]: mean over RGB of |prediction - truth| (images [H,W,3] in [0,1])."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape")
    return np.abs(prediction.astype(np.float64) - truth.astype(np.float64)).mean(axis=-1)


def image_psnr(prediction: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB of 8-bit-quantized images, as :func:`savfi_core.metrics.psnr`."""
    from savfi_core.metrics import psnr

    # savfi_core.metrics takes channel-first images, as Samples hold them
    return float(psnr(np.moveaxis(prediction, -1, 0), np.moveaxis(truth, -1, 0)))


def wipe(image_a: np.ndarray, image_b: np.ndarray, position: float) -> np.ndarray:
    """Columns left of ``position`` * width from ``image_a``, the rest from ``image_b``.

    position 0 shows only b, 1 only a. Returns a new [H,W,3] image.
    """
    if image_a.shape != image_b.shape:
        raise ValueError(f"cannot wipe between images of shapes {image_a.shape} and {image_b.shape}")
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"wipe position must be in [0, 1], got {position}")
    split = int(round(position * image_a.shape[1]))
    composite = image_b.copy()
    composite[:, :split] = image_a[:, :split]
    return composite


def crop_window(shape: tuple[int, ...], center_x: float, center_y: float, zoom: float) -> tuple[slice, slice]:
    """A window of 1/zoom of the image around the relative center (center_x, center_y in [0,1])."""
    if zoom < 1:
        raise ValueError(f"zoom must be >= 1, got {zoom}")
    height, width = shape[:2]
    crop_height, crop_width = max(1, int(height / zoom)), max(1, int(width / zoom))
    top = int(np.clip(round(center_y * height - crop_height / 2), 0, height - crop_height))
    left = int(np.clip(round(center_x * width - crop_width / 2), 0, width - crop_width))
    return slice(top, top + crop_height), slice(left, left + crop_width)


def plot_comparison(
    truth: np.ndarray,
    prediction_a: np.ndarray,
    prediction_b: np.ndarray,
    label_a: str = "A",
    label_b: str = "B",
    *,
    wipe_position: float = 0.5,
    center: tuple[float, float] = (0.5, 0.5),
    zoom: float = 3.0,
    title: str = "",
    error_scale: float = 0.25,
):
    """Figure with GT, both predictions with their PSNR, the wipe composite, both |error| maps
    (shared colour scale [0, error_scale]) and a zoomed crop of GT, A and B.

    Images are float [H,W,3] in [0,1]. Returns the matplotlib Figure.
    """
    from savfi_core.report import _pyplot

    plt = _pyplot()
    psnr_a, psnr_b = image_psnr(prediction_a, truth), image_psnr(prediction_b, truth)
    rows, columns = crop_window(truth.shape, center[0], center[1], zoom)
    figure, axes = plt.subplots(3, 3, figsize=(10, 8.5))
    panels = [
        (truth, "ground truth", None), (prediction_a, f"{label_a}: {psnr_a:.2f} dB", None), (prediction_b, f"{label_b}: {psnr_b:.2f} dB", None),
        (wipe(prediction_a, prediction_b, wipe_position), f"wipe: {label_a} | {label_b}", None),
        (absolute_error(prediction_a, truth), f"|{label_a} - GT|", "error"), (absolute_error(prediction_b, truth), f"|{label_b} - GT|", "error"),
        (truth[rows, columns], "GT (zoom)", None), (prediction_a[rows, columns], f"{label_a} (zoom)", None),
        (prediction_b[rows, columns], f"{label_b} (zoom)", None),
    ]
    for axis, (image, name, kind) in zip(axes.flat, panels):
        if kind == "error":
            shown = axis.imshow(image, cmap="inferno", vmin=0, vmax=error_scale)
        else:
            axis.imshow(np.clip(image, 0, 1), interpolation="nearest")
        axis.set_title(name, fontsize="small")
        axis.axis("off")
    # where the wipe splits and which region the zoom shows
    axes[1][0].axvline(wipe_position * truth.shape[1] - 0.5, color="white", linewidth=1)
    for axis in (axes[0][0], axes[0][1], axes[0][2]):
        axis.add_patch(plt.Rectangle((columns.start - 0.5, rows.start - 0.5), columns.stop - columns.start, rows.stop - rows.start,
                                     fill=False, edgecolor="yellow", linewidth=1))
    figure.colorbar(shown, ax=list(axes[1][1:]), fraction=0.025, label="mean |error| over RGB")
    if title:
        figure.suptitle(title)
    return figure


class CropLibrary:
    """The saved crops of a study, indexed by (dataset, sequence, backbone, panel)."""

    def __init__(self, crops: pd.DataFrame):
        required = {"backbone", "dataset", "sequence", "panel", "path"}
        missing = sorted(required - set(crops.columns))
        if missing:
            raise ValueError(f"crop index lacks columns {missing}")
        if crops.empty:
            raise ValueError("no saved crops: run the evaluation jobs (evaluate.ipynb writes crops.csv) first")
        self.crops = crops.assign(sequence=crops["sequence"].astype(str))

    def datasets(self) -> list[str]:
        return sorted(self.crops["dataset"].unique())

    def sequences(self, dataset: str) -> list[str]:
        return sorted(self.crops.loc[self.crops["dataset"] == dataset, "sequence"].unique())

    def backbones(self, dataset: str, sequence: str) -> list[str]:
        rows = self.crops[(self.crops["dataset"] == dataset) & (self.crops["sequence"] == sequence)]
        return sorted(rows["backbone"].unique())

    def methods(self, dataset: str, sequence: str, backbone: str) -> list[str]:
        rows = self._rows(dataset, sequence, backbone)
        return sorted(set(rows["panel"]) - {"gt", "input0", "input1"})

    def image(self, dataset: str, sequence: str, backbone: str, panel: str) -> np.ndarray:
        rows = self._rows(dataset, sequence, backbone)
        rows = rows[rows["panel"] == panel]
        if rows.empty:
            raise KeyError(f"no crop {panel!r} for {backbone}/{dataset}/{sequence}")
        if "seed" in rows.columns:  # the first seed, consistently
            rows = rows.sort_values("seed", key=lambda seeds: seeds.astype(str))
        return read_image(rows["path"].iloc[0])

    def _rows(self, dataset: str, sequence: str, backbone: str) -> pd.DataFrame:
        crops = self.crops
        return crops[(crops["dataset"] == dataset) & (crops["sequence"] == str(sequence)) & (crops["backbone"] == backbone)]


def comparison_widget(library: CropLibrary) -> Any:
    """An ipywidgets box: dataset, sequence, backbone and two methods to compare, a wipe slider,
    and zoom controls; the figure and the PSNR line redraw on every change. Returns the widget
    (``.update()`` redraws, ``.controls`` holds the controls by name, for tests and scripting).

    Every control carries the CSS class ``savfi-<name>`` (the figure ``savfi-figure``, the PSNR
    line ``savfi-psnr``), which is how the browser test finds them on the Voila page."""
    import ipywidgets as widgets

    from savfi_core.report import _pyplot

    plt = _pyplot()
    dataset = widgets.Dropdown(description="dataset", options=library.datasets())
    sequence = widgets.Dropdown(description="sequence")
    backbone = widgets.Dropdown(description="backbone")
    method_a = widgets.Dropdown(description="method A")
    method_b = widgets.Dropdown(description="method B")
    # continuous_update=False: redraw when the handle is released, not for every pixel of a drag
    # (each redraw takes about half a second)
    wipe_slider = widgets.FloatSlider(description="wipe A|B", min=0.0, max=1.0, step=0.01, value=0.5, continuous_update=False)
    zoom = widgets.FloatSlider(description="zoom", min=1.0, max=8.0, step=0.5, value=3.0, continuous_update=False)
    center_x = widgets.FloatSlider(description="crop x", min=0.0, max=1.0, step=0.01, value=0.5, continuous_update=False)
    center_y = widgets.FloatSlider(description="crop y", min=0.0, max=1.0, step=0.01, value=0.5, continuous_update=False)
    psnr_line = widgets.HTML()
    picture = widgets.Image(format="png")
    state: dict[str, Any] = {"figure": None, "refreshing": False}

    def set_options(control, options) -> None:
        """New choices, keeping the current one when it is still offered (ipywidgets 8 would
        otherwise leave the value at None)."""
        previous = control.value
        control.options = options
        control.value = previous if previous in options else (options[0] if options else None)

    def refresh_options(*_):
        # the intermediate values set here would each redraw: hold the redraws, then draw once
        # (a nested call, from the sequence or backbone set below, has nothing left to do)
        if state["refreshing"]:
            return
        state["refreshing"] = True
        try:
            set_options(sequence, library.sequences(dataset.value))
            set_options(backbone, library.backbones(dataset.value, sequence.value) if sequence.value is not None else [])
            methods = library.methods(dataset.value, sequence.value, backbone.value) if backbone.value is not None else []
            set_options(method_a, methods)
            set_options(method_b, methods)
            if len(methods) > 1 and method_a.value == method_b.value:
                method_a.value = "baseline" if "baseline" in methods else methods[0]
                method_b.value = next(m for m in reversed(methods) if m != method_a.value)
        finally:
            state["refreshing"] = False
        update()

    def update(*_):
        if state["refreshing"] or None in (dataset.value, sequence.value, backbone.value, method_a.value, method_b.value):
            return None
        truth = library.image(dataset.value, sequence.value, backbone.value, "gt")
        first = library.image(dataset.value, sequence.value, backbone.value, method_a.value)
        second = library.image(dataset.value, sequence.value, backbone.value, method_b.value)
        label_a, label_b = method_label(method_a.value), method_label(method_b.value)
        state["figure"] = plot_comparison(
            truth, first, second, label_a, label_b,
            wipe_position=wipe_slider.value, center=(center_x.value, center_y.value), zoom=zoom.value,
            title=f"{backbone.value} / {dataset.value} / {sequence.value}",
        )
        psnr_line.value = (f"PSNR against ground truth: <b>{html.escape(label_a)}</b>: {image_psnr(first, truth):.2f} dB, "
                           f"<b>{html.escape(label_b)}</b>: {image_psnr(second, truth):.2f} dB")
        # One PNG into an Image widget, drawn once (an Output area with the inline backend draws
        # twice for its tight bounding box) at fast compression: the redraw is the page's latency.
        buffer = io.BytesIO()
        state["figure"].savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
        plt.close(state["figure"])  # kept for its titles; closed, so the inline backend does not show it too
        picture.value = buffer.getvalue()
        return state["figure"]

    for control in (dataset, sequence, backbone):
        control.observe(refresh_options, names="value")
    for control in (method_a, method_b, wipe_slider, zoom, center_x, center_y):
        control.observe(update, names="value")
    controls = {"dataset": dataset, "sequence": sequence, "backbone": backbone, "method_a": method_a, "method_b": method_b,
                "wipe": wipe_slider, "zoom": zoom, "center_x": center_x, "center_y": center_y}
    for name, control in {**controls, "psnr": psnr_line, "figure": picture}.items():
        control.add_class(f"savfi-{name.replace('_', '-')}")
    box = widgets.VBox([
        widgets.HBox([dataset, sequence, backbone]), widgets.HBox([method_a, method_b]),
        widgets.HBox([wipe_slider, zoom]), widgets.HBox([center_x, center_y]), psnr_line, picture,
    ])
    box.controls = controls
    box.update = update
    box.state = state
    box.psnr_line = psnr_line
    refresh_options()
    return box
