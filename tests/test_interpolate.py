"""``python -m savfi_core.interpolate`` on the embedded bikes clip with a tiny backbone."""
from __future__ import annotations

import logging

import pytest
import torch

from savfi_core.backbones import create_model, list_models
from savfi_core.checkpoint import atomic_save
from savfi_core.data import clip_path, list_image_files, read_image
from savfi_core.interpolate import main
from savfi_core.meta import MetaLearner

pytestmark = pytest.mark.skipif("sepconv" not in list_models(), reason="the sepconv backbone is not registered yet")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bikes():
    return clip_path("bikes")


def decode(path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.average_rate


def test_bikes_first_20_frames_doubled_into_a_playable_video(bikes, tmp_path, caplog):
    output = tmp_path / "bikes_x2.mp4"
    with caplog.at_level(logging.INFO, logger="savfi.interpolate"):
        status = main(
            [str(bikes), "--model", "sepconv", "--size", "tiny", "--weights", "none", "--max-frames", "20",
             "--downscale", "8", "--inner-lr", "1e-4", "--out", str(output)]
        )  # fmt: skip
    assert status == 0
    frames, rate = decode(output)
    assert len(frames) == 39  # 20 inputs + 19 interpolated
    _, input_rate = decode(bikes)
    assert float(rate) == pytest.approx(2 * float(input_rate))
    assert frames[0].shape == (34, 80, 3)  # 640x272 / 8
    assert "gaps [0, 18]" in caplog.text and "without adaptation" in caplog.text


def test_meta_learner_checkpoint_times_4_into_numbered_pngs(bikes, tmp_path):
    learner = MetaLearner(create_model("sepconv", size="tiny"), algorithm="metasgd", inner_steps=1, inner_lr=1e-4)
    checkpoint = atomic_save({"learner": learner.state_dict()}, tmp_path / "meta.pt")
    output = tmp_path / "frames"
    main(
        [str(bikes), "--model", "sepconv", "--size", "tiny", "--weights", str(checkpoint), "--max-frames", "5",
         "--downscale", "8", "--times", "4", "--out", str(output)]
    )  # fmt: skip
    files = list_image_files(output)
    assert len(files) == 4 * (5 - 1) + 1
    # The input frames stay where they were: output frame 4k is input frame k (8-bit round trip).
    from savfi_core.data import decode_video

    inputs = decode_video(bikes, downscale=8).frames[:5].float() / 255
    assert torch.allclose(read_image(files[8]), inputs[2], atol=1 / 255 + 1e-6)


def test_no_adapt_matches_adapting_with_zero_steps(bikes, tmp_path):
    common = [str(bikes), "--model", "sepconv", "--size", "tiny", "--weights", "none", "--max-frames", "4", "--downscale", "8"]
    torch.manual_seed(0)
    main(common + ["--no-adapt", "--out", str(tmp_path / "plain")])
    torch.manual_seed(0)
    main(common + ["--adapt-steps", "0", "--out", str(tmp_path / "zero")])
    plain, zero = list_image_files(tmp_path / "plain"), list_image_files(tmp_path / "zero")
    assert len(plain) == len(zero) == 7
    assert all(torch.equal(read_image(a), read_image(b)) for a, b in zip(plain, zero))


def test_rife_v4_times_4_predicts_quarter_times_directly_and_logs_adapted_windows(bikes, tmp_path, caplog, monkeypatch):
    """A network that takes the time gets t = 0.25, 0.5, 0.75 in one pass each, one adaptation per window."""
    asked = []
    original = MetaLearner.predict

    def recording_predict(self, sample, params=None, time=None):
        asked.append((sample.name, time, params is not None))
        return original(self, sample, params, time=time)

    monkeypatch.setattr(MetaLearner, "predict", recording_predict)
    output = tmp_path / "bikes_x4.mp4"
    with caplog.at_level(logging.INFO, logger="savfi.interpolate"):
        status = main(
            [str(bikes), "--model", "rife_v4", "--weights", "default", "--max-frames", "5", "--downscale", "8",
             "--times", "4", "--out", str(output)]
        )  # fmt: skip
    assert status == 0
    frames, rate = decode(output)
    assert len(frames) == 4 * (5 - 1) + 1
    _, input_rate = decode(bikes)
    assert float(rate) == pytest.approx(4 * float(input_rate))
    assert [time for _, time, _ in asked] == [0.25, 0.5, 0.75] * 4  # 4 gaps, no repeated doubling
    assert [adapted for _, _, adapted in asked] == [False] * 3 + [True] * 6 + [False] * 3
    assert "adapted 2 of 4 windows" in caplog.text and "t = 0.25, 0.5, 0.75 predicted directly" in caplog.text


def test_middle_frame_networks_refuse_a_direct_factor_of_4():
    from savfi_core.interpolate import multiply_frame_rate

    learner = MetaLearner(create_model("sepconv", size="tiny"))
    with pytest.raises(ValueError, match="predicts only the middle frame"):
        multiply_frame_rate(torch.rand(3, 3, 16, 16), learner, 1, adapt=False, factor=4, progress=False)
