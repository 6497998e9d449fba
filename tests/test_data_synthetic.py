"""SyntheticMotionDataset: layered scenes with known motion rendered from training frames."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from savfi_core.data import DatasetError, MixtureDataset, Sample, SavfiDataset, SyntheticMotionDataset
from savfi_core.data.synthetic import render_layer

REPO_ROOT = Path(__file__).resolve().parents[1]


class NoiseFrames(SavfiDataset):
    """Septuplets of seeded uniform noise (every pixel differs from its neighbours: a shift shows)."""

    dataset_name = "noise"

    def __init__(self, count=3, size=(40, 56)):
        super().__init__()
        self.count, self.size = count, size

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return Sample(frames=torch.rand(7, 3, *self.size, generator=generator), valid=torch.ones(7, dtype=torch.bool),
                      target_index=3, name=f"noise{index}")

    def sample_info(self, index):
        return {"name": f"noise{index}"}


def test_a_translating_layer_moves_by_its_velocity_per_frame_exactly():
    """At integer offsets bicubic sampling returns the source's pixels, so frame t+1 is frame t
    shifted by the velocity, and frame 0 is the source window itself."""
    source = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    common = dict(size=(16, 20), anchor=(10.0, 8.0), source_anchor=(21.0, 13.0), rotation_degrees=0.0, zoom=0.0)
    frame0, _ = render_layer(source, velocity=(2.0, -1.0), time=0.0, **common)
    frame1, _ = render_layer(source, velocity=(2.0, -1.0), time=1.0, **common)
    # output pixel (x, y) at time 0 reads source (x + 11, y + 5)
    torch.testing.assert_close(frame0, source[:, 5:21, 11:31], rtol=0, atol=1e-12)
    # image_1(x, y) = image_0(x - 2, y + 1)
    torch.testing.assert_close(frame1[:, :15, 2:], frame0[:, 1:, :18], rtol=0, atol=1e-12)
    # a half-frame step is not a whole pixel: the frame in between differs from both
    middle, _ = render_layer(source, velocity=(2.0, -1.0), time=0.5, **common)
    assert (middle - frame0).abs().mean() > 0.05 and (middle - frame1).abs().mean() > 0.05


def test_a_layer_point_travels_at_constant_velocity_while_it_turns_and_scales():
    """The layer coordinate under pixel anchor + v t is the anchor at every t, whatever the rotation
    and zoom; a point off the anchor turns by the rotation per frame."""
    source = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(1))
    anchor, velocity = (6.0, 7.0), (1.0, 2.0)
    for time in (-3.0, -1.0, 0.0, 2.0):
        _, coordinates = render_layer(source, (24, 24), anchor, (20.0, 15.0), velocity, 5.0, 0.02, time)
        x, y = int(anchor[0] + velocity[0] * time), int(anchor[1] + velocity[1] * time)
        if 0 <= x < 24 and 0 <= y < 24:
            torch.testing.assert_close(coordinates[y, x], torch.tensor(anchor, dtype=torch.float64))
    _, coordinates = render_layer(source, (24, 24), (6.0, 6.0), (20.0, 15.0), (0.0, 0.0), 90.0 / 4, 0.0, 4.0)
    # after 4 frames at 22.5 degrees per frame the layer has turned 90 degrees: pixel (6, 16)
    # (10 below the anchor on screen) shows the layer point 10 to the anchor's one side
    torch.testing.assert_close(coordinates[16, 6], torch.tensor([16.0, 6.0], dtype=torch.float64), atol=1e-9, rtol=0)


def test_scenes_are_seeded_septuplets_in_range_and_new_each_epoch():
    source = NoiseFrames()
    dataset = SyntheticMotionDataset(source, length=5, size=(32, 48), max_speed=3.0, seed=4)
    sample = dataset[2]
    assert tuple(sample.frames.shape) == (7, 3, 32, 48) and sample.frames.dtype == torch.float32
    assert bool(sample.valid.all()) and sample.target_index == 3
    assert 0.0 <= float(sample.frames.min()) and float(sample.frames.max()) <= 1.0
    assert torch.equal(sample.frames, SyntheticMotionDataset(source, length=5, size=(32, 48), max_speed=3.0, seed=4)[2].frames)
    assert not torch.equal(sample.frames, dataset[3].frames)
    dataset.set_epoch(1)
    assert not torch.equal(sample.frames, dataset[2].frames)
    info = dataset.sample_info(2)
    assert info["name"] == "synthetic_motion/4/1/2" and len(info["layers"]) >= 2
    assert all(layer["source"].startswith("noise") for layer in info["layers"])
    assert all(abs(complex(*layer["velocity"])) <= 3.0 for layer in info["layers"])
    assert "speeds up to 3 px/frame" in dataset.describe()


def test_frames_move_as_drawn_and_a_still_scene_does_not_move():
    source = NoiseFrames()
    still = SyntheticMotionDataset(source, length=3, size=(24, 24), objects=(0, 0), still_background_share=1.0)
    frames = still[0].frames
    assert all(torch.equal(frames[0], frames[position]) for position in range(7))
    moving = SyntheticMotionDataset(source, length=20, size=(24, 24), objects=(1, 2), max_speed=4.0)
    differences = [float((moving[index].frames[4] - moving[index].frames[2]).abs().mean()) for index in range(20)]
    assert sum(difference > 0.01 for difference in differences) >= 15, differences


def test_bad_settings_are_refused_by_name():
    source = NoiseFrames()
    with pytest.raises(DatasetError, match="has no samples"):
        SyntheticMotionDataset(NoiseFrames(count=0))
    with pytest.raises(DatasetError, match="max_speed"):
        SyntheticMotionDataset(source, max_speed=-1)
    with pytest.raises(DatasetError, match="objects"):
        SyntheticMotionDataset(source, objects=(3, 1))
    with pytest.raises(DatasetError, match="still_background_share"):
        SyntheticMotionDataset(source, still_background_share=1.5)
    with pytest.raises(DatasetError, match="size"):
        SyntheticMotionDataset(source, size=(4, 64))
    with pytest.raises(IndexError, match="has 10 samples"):
        SyntheticMotionDataset(source, length=10)[10]


def test_pretrain_tiny_mixes_synthetic_scenes_from_its_training_frames_only(shared_data):
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    import pretrain_tiny

    root = shared_data / "vimeo_septuplet"
    arguments = pretrain_tiny.parse_arguments(["--model", "sepconv", "--vimeo-train", str(root), "--vimeo-share", "0.3",
                                              "--synthetic-share", "0.4", "--synthetic-max-speed", "3"])
    data = pretrain_tiny.training_data(arguments)
    assert isinstance(data, MixtureDataset) and data.shares == pytest.approx([0.42, 0.18, 0.4])
    synthetic = data.datasets[2]
    assert isinstance(synthetic, SyntheticMotionDataset) and synthetic.max_speed == 3.0
    # the layers are textured from the clips' train split and the Vimeo train septuplets only
    assert [len(part) for part in synthetic.source.datasets] == [256, 8]
    assert synthetic.source.shares == pytest.approx([0.7, 0.3])
    names = {layer["source"].split(":")[0].split("/")[0] for index in range(40) for layer in synthetic.sample_info(index)["layers"]}
    assert names <= {"bikes1", "bikes3", "bikes5", "bikes6", "bunny", "00001"}, names
    description = pretrain_tiny.training_data_description(arguments, all_triplets=True, train_dataset=data)
    assert "0.4 synthetic septuplets rendered from their frames" in description and "speeds up to 3 px/frame" in description
    assert "--synthetic-share 0.4 --synthetic-max-speed 3.0" in pretrain_tiny.teacher_flags(arguments)
    clips_only = pretrain_tiny.training_data(pretrain_tiny.parse_arguments(["--model", "dvf", "--synthetic-share", "0.5"]))
    assert clips_only.shares == pytest.approx([0.5, 0.5]) and type(clips_only.datasets[1].source).__name__ == "ClipsDataset"
    with pytest.raises(SystemExit, match="--synthetic-share must be in"):
        pretrain_tiny.training_data(pretrain_tiny.parse_arguments(["--model", "dvf", "--synthetic-share", "1"]))


def test_the_training_record_names_the_synthetic_settings_so_a_resume_with_others_is_refused():
    from savfi_core.train.pretrain import training_data_record

    source = NoiseFrames()
    record = training_data_record(MixtureDataset([(source, 0.5), (SyntheticMotionDataset(source, max_speed=2.0), 0.5)]))
    synthetic = record["parts"][1]
    assert synthetic["name"] == "synthetic_motion" and synthetic["settings"]["max_speed"] == 2.0
    assert synthetic["source"] == {"name": "noise", "samples": 3}
    other = training_data_record(MixtureDataset([(source, 0.5), (SyntheticMotionDataset(source, max_speed=4.0), 0.5)]))
    assert other != record
