"""PSNR/SSIM against scikit-image on real frames, infinite PSNR, and the pandas summaries."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from savfi_core.data import read_image
from savfi_core.metrics import (
    PSNR_CAP_DB,
    bootstrap_interval,
    frame_metrics,
    paired_difference,
    psnr,
    quantize,
    ssim,
    summarize,
)


def real_pairs(shared_data):
    """(prediction path, ground-truth path): neighbouring real frames stand in for predictions."""
    middlebury = shared_data / "middlebury"
    vimeo = shared_data / "vimeo_septuplet/sequences"
    return [
        (middlebury / "other-color-twoframes/other-data/Venus/frame10.png", middlebury / "other-gt-interp/Venus/frame10i11.png"),
        (middlebury / "other-color-twoframes/other-data/Urban2/frame11.png", middlebury / "other-gt-interp/Urban2/frame10i11.png"),
        (vimeo / "00002/0003/im3.png", vimeo / "00002/0003/im4.png"),
    ]


def as_uint8(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_psnr_and_ssim_agree_with_scikit_image_on_real_frames(shared_data):
    for prediction_path, target_path in real_pairs(shared_data):
        prediction, target = read_image(prediction_path), read_image(target_path)
        expected_psnr = peak_signal_noise_ratio(as_uint8(target_path), as_uint8(prediction_path), data_range=255)
        expected_ssim = structural_similarity(
            as_uint8(target_path), as_uint8(prediction_path), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=255, channel_axis=-1,
        )
        assert abs(psnr(prediction, target) - expected_psnr) < 1e-6
        assert abs(ssim(prediction, target) - expected_ssim) < 1e-6
        assert 10 < psnr(prediction, target) < 45 and 0.2 < ssim(prediction, target) < 1


def test_psnr_quantizes_before_comparing():
    target = torch.rand(3, 16, 20, generator=torch.Generator().manual_seed(0))
    target = torch.round(target * 255) / 255
    # Offsets below half a level vanish in the 8-bit quantization: a perfect frame, +inf.
    assert psnr(target + 0.4 / 255, target) == math.inf
    assert frame_metrics(target.numpy(), target)["psnr"] == math.inf
    assert ssim(target, target) == pytest.approx(1.0)
    # Out-of-range values clamp to 0..255, as when saving a PNG.
    assert psnr(target * 0 - 0.5, target * 0) == math.inf
    # One level off everywhere: MSE = 1, PSNR = 20 log10(255).
    shifted = (torch.round(target * 255).clamp(0, 254) + 1) / 255
    assert psnr(shifted, torch.round(target * 255).clamp(0, 254) / 255) == pytest.approx(20 * math.log10(255))
    assert quantize(torch.tensor([[[0.2 / 255, 1.7 / 255, 2.0, -1.0]]])).ravel().tolist() == [0.0, 2.0, 255.0, 0.0]


def test_metrics_reject_nan_and_mismatched_shapes():
    frame = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match="NaN"):
        psnr(torch.full((3, 8, 8), float("nan")), frame)
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(torch.zeros(3, 8, 9), torch.zeros(3, 9, 9))
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        psnr(torch.zeros(8, 8), torch.zeros(8, 8))


def results_table() -> pd.DataFrame:
    """Two methods on 12 sequences (2 frames each for 'ours'), plus one perfect frame."""
    generator = np.random.default_rng(1)
    rows = []
    for index in range(12):
        base = 30 + generator.normal(0, 2)
        rows.append({"method": "baseline", "sequence": f"s{index:02d}", "psnr": base})
        rows.append({"method": "ours", "sequence": f"s{index:02d}", "psnr": base + 0.5 + generator.normal(0, 0.2)})
        rows.append({"method": "ours", "sequence": f"s{index:02d}", "psnr": base + 0.5 + generator.normal(0, 0.2)})
    return pd.DataFrame(rows)


def test_summarize_averages_frames_per_sequence_then_bootstraps():
    table = results_table()
    summary = summarize(table, by=["method"], value="psnr", seed=0)
    per_sequence = table[table.method == "ours"].groupby("sequence")["psnr"].mean()
    ours = summary.loc["ours"]
    assert ours["n"] == 12 and ours["n_infinite"] == 0
    assert ours["mean"] == pytest.approx(per_sequence.mean())
    assert ours["std"] == pytest.approx(per_sequence.std(ddof=1))
    assert ours["ci_low"] < ours["mean"] < ours["ci_high"]
    # Width close to the normal-theory 2 * 1.96 * sd / sqrt(n).
    assert (ours["ci_high"] - ours["ci_low"]) == pytest.approx(2 * 1.96 * ours["std"] / math.sqrt(12), rel=0.25)
    assert summarize(table, seed=0).equals(summary), "seeded: identical on a second call"
    assert summarize(table, seed=1).loc["ours", "ci_low"] != ours["ci_low"]
    rows_as_units = summarize(table, sequence=None).loc["ours"]
    assert rows_as_units["n"] == 24 and rows_as_units["mean"] == pytest.approx(table[table.method == "ours"].psnr.mean())


def test_summaries_treat_infinite_psnr_explicitly():
    table = pd.concat(
        [results_table(), pd.DataFrame([{"method": "baseline", "sequence": "s12", "psnr": math.inf}])],
        ignore_index=True,
    )
    capped = summarize(table).loc["baseline"]
    excluded = summarize(table, infinite="exclude").loc["baseline"]
    finite = table[(table.method == "baseline") & np.isfinite(table.psnr)].psnr
    assert capped["n_infinite"] == excluded["n_infinite"] == 1
    assert capped["n"] == 13 and excluded["n"] == 12
    assert excluded["mean"] == pytest.approx(finite.mean())
    assert capped["mean"] == pytest.approx((finite.sum() + PSNR_CAP_DB) / 13)
    assert summarize(table).loc["ours", "n_infinite"] == 0
    with pytest.raises(ValueError, match="infinite must be"):
        summarize(table, infinite="ignore")
    with pytest.raises(ValueError, match="NaN"):
        summarize(table.assign(psnr=table.psnr.where(table.index != 3, np.nan)))


def test_paired_difference_of_two_methods():
    table = results_table()
    difference = paired_difference(table, "ours", "baseline", seed=0)
    assert len(difference) == 1
    row = difference.iloc[0]
    ours = table[table.method == "ours"].groupby("sequence").psnr.mean()
    baseline = table[table.method == "baseline"].set_index("sequence").psnr
    expected = ours - baseline
    assert row["n"] == 12 and row["mean"] == pytest.approx(expected.mean())
    assert row["std"] == pytest.approx(expected.std(ddof=1))
    assert row["ci_low"] < row["mean"] < row["ci_high"]
    # Pairing removes the large between-sequence spread: the CI excludes 0 and is narrow.
    assert row["ci_low"] > 0 and row["ci_high"] - row["ci_low"] < 0.5
    assert row["method_a"] == "ours" and row["method_b"] == "baseline"
    assert paired_difference(table, "baseline", "ours").iloc[0]["mean"] == pytest.approx(-row["mean"])


def test_paired_difference_by_group_and_errors():
    table = results_table()
    both = pd.concat([table.assign(dataset="vimeo"), table.assign(dataset="middlebury", psnr=table.psnr + 1)])
    grouped = paired_difference(both, "ours", "baseline", by=["dataset"])
    assert list(grouped.index) == ["middlebury", "vimeo"]
    assert grouped.loc["vimeo", "mean"] == pytest.approx(grouped.loc["middlebury", "mean"])
    unpaired = table[~((table.method == "baseline") & (table.sequence == "s03"))]
    with pytest.raises(ValueError, match="s03"):
        paired_difference(unpaired, "ours", "baseline")
    with pytest.raises(ValueError, match="'nobody' has no rows"):
        paired_difference(table, "ours", "nobody")
    perfect = pd.concat(
        [table, pd.DataFrame([{"method": "ours", "sequence": "s12", "psnr": math.inf},
                              {"method": "baseline", "sequence": "s12", "psnr": 35.0}])],
        ignore_index=True,
    )
    assert paired_difference(perfect, "ours", "baseline").iloc[0]["n"] == 13
    excluded = paired_difference(perfect, "ours", "baseline", infinite="exclude").iloc[0]
    assert excluded["n"] == 12 and excluded["n_infinite"] == 1


def test_bootstrap_interval_edge_cases():
    assert all(math.isnan(bound) for bound in bootstrap_interval([31.0]))
    low, high = bootstrap_interval([2.0, 2.0, 2.0])
    assert low == high == 2.0
    low, high = bootstrap_interval(np.arange(100.0), confidence=0.5, seed=4)
    assert low < 49.5 < high and high - low < bootstrap_interval(np.arange(100.0), seed=4)[1] - low


def test_bootstrap_interval_is_scipys_and_matches_the_former_resampling_to_1e9():
    """The interval moved to scipy.stats.bootstrap; for the same seed it equals the former own
    resampling (numpy default_rng(seed).integers(0, n, (resamples, n)) and linear quantiles)."""
    import numpy as np

    from savfi_core.metrics import bootstrap_interval

    generator = np.random.default_rng(11)
    for n in (2, 5, 8, 30):
        for seed in (0, 3):
            values = generator.normal(size=n)
            means = values[np.random.default_rng(seed).integers(0, n, size=(2000, n))].mean(axis=1)
            former = np.quantile(means, [0.025, 0.975])
            assert np.allclose(bootstrap_interval(values, seed=seed), former, rtol=0, atol=1e-9)
