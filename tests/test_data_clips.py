"""The embedded clips: the documented scene table, the train/test split, crops, and no ../shared."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from savfi_core.data import (
    CLIP_FILES,
    CLIP_SCENES,
    choose_moving_crop,
    collate_samples,
    find_shot_cuts,
    load_clip,
    open_dataset,
    random_crop_origin,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_clips_decode_to_the_documented_sizes_and_rates():
    expected = {"bikes": (250, 136, 320, 25.0), "carphone": (120, 144, 176, 30000 / 1001), "bunny": (132, 180, 320, 25.0)}
    for clip, (frame_count, height, width, fps) in expected.items():
        decoded = load_clip(clip)
        assert decoded.frames.dtype == torch.uint8
        assert decoded.frames.shape == (frame_count, 3, height, width)
        assert decoded.fps == pytest.approx(fps)
        assert load_clip(clip) is decoded, "decoded clips are cached"


def test_scene_table_matches_detected_shot_cuts():
    for clip in CLIP_FILES:
        frames = load_clip(clip).frames
        scenes = sorted((scene for scene in CLIP_SCENES if scene.clip == clip), key=lambda scene: scene.first)
        # Scenes tile the clip exactly: first frame 0, no gaps, last frame the clip's last.
        assert scenes[0].first == 0 and scenes[-1].last == len(frames) - 1
        assert all(left.last + 1 == right.first for left, right in zip(scenes, scenes[1:]))
        assert find_shot_cuts(frames) == [scene.last for scene in scenes[:-1]], clip


def test_split_shares_no_frame_and_no_scene_and_crosses_no_cut():
    train = open_dataset("clips", split="train", augment=False)
    test = open_dataset("clips", split="test")
    assert (len(train), len(test)) == (256, 30)
    scene_of = {scene.scene: scene for scene in CLIP_SCENES}

    def used_frames(dataset):
        used = set()
        for index in range(len(dataset)):
            info = dataset.sample_info(index)
            scene = scene_of[info["scene"]]
            assert scene.first <= info["frame_indices"][0] and info["frame_indices"][-1] <= scene.last
            used |= {(scene.clip, frame) for frame in info["frame_indices"]}
        return used

    assert not used_frames(train) & used_frames(test)
    train_scenes = {train.sample_info(index)["scene"] for index in range(len(train))}
    test_scenes = {test.sample_info(index)["scene"] for index in range(len(test))}
    assert not train_scenes & test_scenes
    assert test_scenes == {"bikes2", "bikes4", "carphone"}
    assert "bunny" in train_scenes and all(scene_of[name].clip != "bunny" for name in test_scenes)


def test_test_items_are_the_decoded_frames():
    test = open_dataset("clips", split="test")
    sample = test[6]  # the first bikes4 septuplet (bikes2 gives 6 with stride 7)
    assert sample.name == "bikes4:137-143" and sample.target_index == 3 and sample.valid.all()
    assert sample.frames.shape == (7, 3, 136, 320) and sample.frames.dtype == torch.float32
    assert torch.equal(sample.frames, load_clip("bikes").frames[137:144].float() / 255)
    info = test.sample_info(6)
    assert info["fps"] == 25.0 and info["path"].endswith("bikes.mp4") and info["downscale"] == 2


def test_moving_crop_picks_the_crop_with_motion():
    frames = torch.zeros(7, 3, 64, 64)
    frames[2, :, 40:56, 40:56] = 1.0  # a square that is at t-1 and gone at t+1
    generator = torch.Generator().manual_seed(0)
    top, left = choose_moving_crop(frames, 24, generator, compare=(2, 4), candidates=64)
    assert top + 24 > 40 and left + 24 > 40, "the chosen crop must overlap the moving square"
    # One candidate is a plain uniform crop: the same draw as random_crop_origin.
    single = choose_moving_crop(frames, 24, torch.Generator().manual_seed(3), compare=(2, 4), candidates=1)
    assert single == random_crop_origin(64, 64, (24, 24), torch.Generator().manual_seed(3))


def test_train_crops_move_more_than_uniform_ones_and_repeat_per_seed():
    moving = open_dataset("clips", split="train", crop_size=64, seed=5)
    uniform = open_dataset("clips", split="train", crop_size=64, seed=5, crop_sampler="uniform")
    again = open_dataset("clips", split="train", crop_size=64, seed=5)
    indices = range(0, 256, 16)

    def motion(sample):
        return float((sample.frames[2] - sample.frames[4]).abs().mean())

    moving_samples = [moving[index] for index in indices]
    assert all(torch.equal(sample.frames, again[index].frames) for sample, index in zip(moving_samples, indices))
    assert sum(map(motion, moving_samples)) > 1.3 * sum(motion(uniform[index]) for index in indices)
    batch = collate_samples(moving_samples)
    assert batch.frames.shape == (16, 7, 3, 64, 64)


def test_clips_load_without_shared_data(tmp_path):
    """With ../shared hidden (SAVFI_SHARED_DATA pointing nowhere, cwd elsewhere, and any open()
    of the real shared folder made to fail), both splits still load."""
    shared = (REPO_ROOT.parent / "shared").resolve()
    script = textwrap.dedent(
        f"""
        import sys
        shared = {str(shared)!r}
        def refuse_shared(event, arguments):
            if event == "open" and isinstance(arguments[0], str) and arguments[0].startswith(shared):
                raise PermissionError("test hides ../shared: " + arguments[0])
        sys.addaudithook(refuse_shared)
        import torch
        torch.set_num_threads(1)
        from savfi_core.data import open_dataset
        test = open_dataset("clips", split="test")
        train = open_dataset("clips", split="train", crop_size=48)
        sample = test[len(test) - 1]
        crop = train[0]
        print(len(test), len(train), tuple(sample.frames.shape), tuple(crop.frames.shape), sample.name)
        """
    )
    environment = dict(os.environ, SAVFI_SHARED_DATA=str(tmp_path / "no_shared_here"))
    environment["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30", "256", "(7,", "3,", "144,", "176)", "(7,", "3,", "48,", "48)", "carphone:112-118"]
