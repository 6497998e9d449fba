"""The frame-averaging reference row of every evaluation."""
import pytest

from savfi_core.data import open_dataset
from savfi_core.meta import evaluate_frame_average
from savfi_core.metrics import psnr, ssim


def test_frame_average_rows_score_the_mean_of_the_two_inputs(shared_data):
    dataset = open_dataset("vimeo_septuplet", root=shared_data / "vimeo_septuplet", split="test")
    table = evaluate_frame_average(dataset, limit=3)
    assert len(table) == 3 and set(table["protocol"]) == {"frame_average"}
    sample = dataset[1]
    average = (sample.frames[2] + sample.frames[4]) / 2
    assert table.loc[1, "psnr"] == pytest.approx(psnr(average, sample.frames[3]))
    assert table.loc[1, "ssim"] == pytest.approx(ssim(average, sample.frames[3]))
    # a real septuplet moves: averaging is far from perfect
    assert 15 < table["psnr"].mean() < 45


def test_frame_average_refuses_a_sample_without_ground_truth(tmp_path):
    from PIL import Image
    import numpy as np

    for index in range(4):
        Image.fromarray(np.full((8, 8, 3), 40 * index, np.uint8)).save(tmp_path / f"{index:03d}.png")
    frames = open_dataset("frames", root=tmp_path)
    with pytest.raises(ValueError, match="no ground truth"):
        evaluate_frame_average(frames)
