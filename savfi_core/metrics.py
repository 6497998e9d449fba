"""Image quality as video frame interpolation papers measure it, and summaries with pandas.

Per frame:

* :func:`psnr` follows the SAVFI/CAIN evaluation code: prediction and ground truth are first
  quantized to 8 bits, q(x) = clamp(round(255 x), 0, 255), as if both were saved as PNG, then

      PSNR = 10 log10(255^2 / MSE),   MSE = mean over all pixels and channels of (q(p) - q(g))^2.

  Identical quantized images have MSE = 0 and PSNR = +inf (returned as such, never hidden).
  The original code adds 1e-8 to the MSE of [0, 1] images instead, which caps PSNR at 80 dB;
  the summaries below make that explicit (see ``infinite``).
* :func:`ssim`: scikit-image's ``structural_similarity`` on the same quantized images.

Summaries (:func:`summarize`, :func:`paired_difference`) take a long-format DataFrame with one
row per (method, sequence[, frame]) and report mean, standard deviation, count and a seeded
percentile-bootstrap 95% confidence interval whose resampling unit is the sequence.

Rule for infinite PSNR in summaries (argument ``infinite``):

* ``"cap"`` (default): +inf becomes :data:`PSNR_CAP_DB` = 80 dB, the value the original
  evaluation code reports for a perfect frame (-10 log10(1e-8));
* ``"exclude"``: rows with +inf are dropped before averaging.

Either way the column ``n_infinite`` counts them. NaN values (e.g. a frame computed from an
invalid, NaN-filled position) raise ``ValueError``: they are bugs, not measurements.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from skimage.metrics import structural_similarity

__all__ = [
    "PSNR_CAP_DB",
    "quantize",
    "psnr",
    "ssim",
    "frame_metrics",
    "bootstrap_interval",
    "summarize",
    "paired_difference",
]

#: PSNR that summaries use for a perfect (+inf) frame with ``infinite="cap"``: the original
#: code's 1e-8 added to the MSE of [0, 1] images gives -10 log10(1e-8) = 80 dB at most.
PSNR_CAP_DB = 80.0


def _to_numpy_hwc(image: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    """[3, H, W] (torch or numpy, channel first as in :class:`Sample`) -> float64 [H, W, 3]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu", torch.float64).numpy()
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{what} must have shape [C, H, W] with C in (1, 3), got {image.shape}")
    if np.isnan(image).any():
        raise ValueError(f"{what} contains NaN (an invalid frame position used as an image?)")
    return image.transpose(1, 2, 0)


def quantize(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """8-bit quantization of a [C, H, W] image in [0, 1]: clamp(round(255 x), 0, 255).

    Returns float64 [H, W, C] holding the integers 0..255 (round half to even, as torch and
    numpy round).
    """
    return np.clip(np.round(_to_numpy_hwc(image, "image") * 255.0), 0.0, 255.0)


def _quantized_pair(prediction, target) -> tuple[np.ndarray, np.ndarray]:
    quantized_prediction = quantize(prediction)
    quantized_target = quantize(target)
    if quantized_prediction.shape != quantized_target.shape:
        raise ValueError(
            f"prediction {quantized_prediction.shape} and target {quantized_target.shape} differ in shape (H, W, C)"
        )
    return quantized_prediction, quantized_target


def psnr(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """PSNR in dB of 8-bit-quantized [C, H, W] images in [0, 1]; +inf when they are identical.

    PSNR = 10 log10(255^2 / mean((q(prediction) - q(target))^2)) over all pixels and channels.
    """
    quantized_prediction, quantized_target = _quantized_pair(prediction, target)
    mean_squared_error = float(np.mean((quantized_prediction - quantized_target) ** 2))
    if mean_squared_error == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mean_squared_error)


def ssim(prediction: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> float:
    """SSIM of 8-bit-quantized [C, H, W] images in [0, 1], averaged over pixels and channels.

    Settings of Wang et al. (2004), "Image quality assessment: from error visibility to
    structural similarity", which the VFI evaluation code (pytorch_msssim ``ssim`` in CAIN and
    SAVFI; MATLAB ``ssim``) follows: local statistics under an 11x11 Gaussian window with
    sigma 1.5 (``gaussian_weights=True, sigma=1.5``; scikit-image truncates at 3.5 sigma, i.e.
    radius 5), population (not sample) covariances (``use_sample_covariance=False``),
    K1 = 0.01, K2 = 0.03 with L = 255 (``data_range=255``: the images are quantized to
    0..255 first, as for PSNR), computed per colour channel and averaged
    (``channel_axis=-1``).
    """
    quantized_prediction, quantized_target = _quantized_pair(prediction, target)
    return float(
        structural_similarity(
            quantized_target,
            quantized_prediction,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=-1,
        )
    )


def frame_metrics(prediction, target) -> dict[str, float]:
    """``{"psnr": ..., "ssim": ...}`` of one predicted frame against its ground truth."""
    return {"psnr": psnr(prediction, target), "ssim": ssim(prediction, target)}


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    ``scipy.stats.bootstrap`` (method 'percentile') with ``resamples`` resamples drawn from a
    ``numpy.random.default_rng(seed)`` generator: the (1-c)/2 and (1+c)/2 quantiles of the
    resampled means. Fewer than 2 values give (nan, nan): one value says nothing about spread.
    """
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return math.nan, math.nan
    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence, method="percentile",
                       rng=np.random.default_rng(seed), vectorized=True)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _apply_infinite_rule(frame: pd.DataFrame, value: str, infinite: str) -> pd.DataFrame:
    """A copy of ``frame`` with +inf in ``value`` capped or dropped; NaN and -inf raise."""
    if infinite not in ("cap", "exclude"):
        raise ValueError(f"infinite must be 'cap' or 'exclude', got {infinite!r}")
    column = frame[value].astype(np.float64)
    if column.isna().any():
        rows = frame.index[column.isna()].tolist()[:5]
        raise ValueError(f"column {value!r} holds NaN (rows {rows}...): a NaN metric is a bug, not a measurement")
    if np.isneginf(column).any():
        raise ValueError(f"column {value!r} holds -inf, which no metric here produces")
    is_infinite = np.isposinf(column)
    if infinite == "cap":
        return frame.assign(**{value: column.where(~is_infinite, PSNR_CAP_DB)})
    return frame[~is_infinite].copy()


def _per_sequence(frame: pd.DataFrame, keys: list[str], sequence: str | None, value: str) -> pd.DataFrame:
    """Average ``value`` over rows that share (keys, sequence): the sequence is the unit."""
    if sequence is None:
        return frame
    if sequence not in frame.columns:
        raise ValueError(f"no sequence column {sequence!r} in the DataFrame (columns: {list(frame.columns)})")
    return frame.groupby([*keys, sequence], sort=True, dropna=False)[value].mean().reset_index()


def _statistics(values: np.ndarray, confidence: float, resamples: int, seed: int) -> dict:
    """mean, std (ddof=1; NaN below 2 values), n and the bootstrap CI of ``values``."""
    low, high = bootstrap_interval(values, confidence, resamples, seed)
    return {
        "mean": float(values.mean()) if len(values) else math.nan,
        "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
        "n": int(len(values)),
        "ci_low": low,
        "ci_high": high,
    }


def summarize(
    frame: pd.DataFrame,
    by: Sequence[str] = ("method",),
    value: str = "psnr",
    sequence: str | None = "sequence",
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    infinite: str = "cap",
) -> pd.DataFrame:
    """Mean, std, n and bootstrap CI of ``value`` per group of ``by``, over sequences.

    Rows sharing a group and a ``sequence`` are first averaged (pass ``sequence=None`` to treat
    each row as a unit). Then per group: ``mean``, ``std`` (ddof=1, NaN for n=1), ``n`` (the
    number of sequences), ``ci_low`` and ``ci_high`` (:func:`bootstrap_interval` at
    ``confidence``, same ``seed`` for every group) and ``n_infinite`` (rows that were +inf
    before the ``infinite`` rule, see the module docstring). Groups are sorted by ``by``.
    """
    by = list(by)
    missing = [column for column in [*by, value] if column not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the DataFrame (columns: {list(frame.columns)})")
    counted = frame.assign(_infinite=np.isposinf(frame[value].astype(np.float64)))
    infinite_counts = counted.groupby(by, sort=True)["_infinite"].sum()
    finite_frame = _apply_infinite_rule(frame, value, infinite)
    units = _per_sequence(finite_frame, by, sequence, value)
    rows = []
    for group_key, group in infinite_counts.items():
        key_tuple = group_key if isinstance(group_key, tuple) else (group_key,)
        selection = np.ones(len(units), dtype=bool)
        for column, key in zip(by, key_tuple):
            selection &= (units[column] == key).to_numpy()
        values = units.loc[selection, value].to_numpy(dtype=np.float64)
        rows.append(
            {
                **dict(zip(by, key_tuple)),
                **_statistics(values, confidence, resamples, seed),
                "n_infinite": int(group),
            }
        )
    return pd.DataFrame(rows).set_index(by)


def paired_difference(
    frame: pd.DataFrame,
    method_a: str,
    method_b: str,
    value: str = "psnr",
    method: str = "method",
    sequence: str = "sequence",
    by: Sequence[str] = (),
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    infinite: str = "cap",
) -> pd.DataFrame:
    """Paired difference ``method_a - method_b`` of ``value`` over the sequences both have.

    Per (``by`` group, sequence) each method's rows are averaged, then d_s = a_s - b_s. Returns
    one row per ``by`` group (one row in all when ``by`` is empty) with ``mean`` (mean of d),
    ``std``, ``n`` (paired sequences), bootstrap ``ci_low``/``ci_high`` of the mean
    difference, ``n_infinite`` (rows of either method that were +inf) and ``method_a``,
    ``method_b``. The infinite rule applies before differencing ("exclude" drops the pair).
    Sequences present for only one method raise ``ValueError`` naming them: an unpaired
    comparison would silently compare different test sets.
    """
    by = list(by)
    missing = [column for column in [*by, value, method, sequence] if column not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the DataFrame (columns: {list(frame.columns)})")
    subsets = {}
    for name in (method_a, method_b):
        subsets[name] = frame[frame[method] == name]
        if subsets[name].empty:
            raise ValueError(f"method {name!r} has no rows in column {method!r}")
    keys = {name: pd.MultiIndex.from_frame(subset[[*by, sequence]]).unique() for name, subset in subsets.items()}
    only_a = keys[method_a].difference(keys[method_b])
    only_b = keys[method_b].difference(keys[method_a])
    if len(only_a) or len(only_b):
        raise ValueError(
            f"unpaired sequences: only {method_a!r} has {list(only_a)[:5]}, only {method_b!r} has {list(only_b)[:5]}"
        )
    both = pd.concat(subsets.values())
    infinite_counts = both.assign(_infinite=np.isposinf(both[value].astype(np.float64)))
    means = {}
    for name, subset in subsets.items():
        # With "exclude", a sequence whose rows are all +inf for one method drops out of the pairs.
        kept = _apply_infinite_rule(subset, value, infinite)
        means[name] = _per_sequence(kept, by, sequence, value).set_index([*by, sequence])[value]
    paired = pd.concat({"a": means[method_a], "b": means[method_b]}, axis=1, join="inner")
    differences_all = paired["a"] - paired["b"]
    if by:
        groups = list(differences_all.groupby(level=by, sort=True))
        counts = {
            key if isinstance(key, tuple) else (key,): int(count)
            for key, count in infinite_counts.groupby(by, sort=True)["_infinite"].sum().items()
        }
    else:
        groups = [((), differences_all)]
        counts = {(): int(infinite_counts["_infinite"].sum())}
    rows = []
    for group_key, group in groups:
        key_tuple = group_key if isinstance(group_key, tuple) else (group_key,)
        rows.append(
            {
                **dict(zip(by, key_tuple)),
                "method_a": method_a,
                "method_b": method_b,
                **_statistics(group.to_numpy(dtype=np.float64), confidence, resamples, seed),
                "n_infinite": counts.get(key_tuple, 0),
            }
        )
    result = pd.DataFrame(rows)
    return result.set_index(by) if by else result
