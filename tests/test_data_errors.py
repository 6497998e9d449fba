"""Every bad input raises DatasetError (a ValueError) whose message names the offending path."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from savfi_core.data import DatasetError, open_dataset, read_image

from test_data import write_frame, write_tiny_video


def raises_naming(path, exception=DatasetError):
    """pytest.raises(DatasetError) whose message must contain ``path``."""
    return pytest.raises(exception, match=re.escape(str(path)))


def make_vimeo(root: Path, entries=("00001/0001",), frames=7, list_name="sep_testlist.txt") -> None:
    """A tiny Vimeo-90K layout: one folder per entry with im1..im<frames>, and the list file."""
    for entry in entries:
        for position in range(1, frames + 1):
            write_frame(root / "sequences" / entry / f"im{position}.png", value=position)
    (root / list_name).write_text("\n".join(entries) + "\n")


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


@pytest.mark.parametrize(
    "name, options",
    [
        ("vimeo_septuplet", {"split": "test"}),
        ("vimeo_triplet", {"split": "train"}),
        ("middlebury", {"mode": "allframes"}),
        ("middlebury", {"mode": "twoframes"}),
        ("hd", {}),
        ("snufilm", {"difficulty": "easy"}),
        ("frames", {}),
    ],
)
def test_missing_root_is_named(tmp_path, name, options):
    missing = tmp_path / "no_such_root"
    with raises_naming(missing):
        open_dataset(name, root=missing, **options)


def test_missing_video_file_is_named(tmp_path):
    with raises_naming(tmp_path / "absent.mp4"):
        open_dataset("video", path=tmp_path / "absent.mp4")


def test_missing_list_files_are_named(tmp_path):
    make_vimeo(tmp_path / "vimeo", list_name="sep_testlist.txt")
    with raises_naming(tmp_path / "vimeo" / "sep_trainlist.txt"):
        open_dataset("vimeo_septuplet", root=tmp_path / "vimeo", split="train")
    (tmp_path / "snu").mkdir()
    with raises_naming(tmp_path / "snu" / "test-extreme-meta.txt"):
        open_dataset("snufilm", root=tmp_path / "snu", difficulty="extreme", meta=True)


def test_vimeo_list_entry_without_folder_is_named(tmp_path):
    make_vimeo(tmp_path, entries=("00001/0001",))
    (tmp_path / "sep_testlist.txt").write_text("00001/0001\n00009/0042\n")
    with raises_naming(tmp_path / "sequences" / "00009" / "0042") as caught:
        open_dataset("vimeo_septuplet", root=tmp_path, split="test")
    assert "sep_testlist.txt:2" in str(caught.value)


def test_snufilm_list_entry_without_folder_is_named(tmp_path):
    write_frame(tmp_path / "test/GOPRO_test/GOPR0001/000001.png", value=1)
    listed = "data/SNU-FILM/test/GOPRO_test/GOPR0002/000001.png"
    (tmp_path / "test-easy.txt").write_text(f"{listed} {listed} {listed}\n")
    with raises_naming(tmp_path / "test/GOPRO_test/GOPR0002") as caught:
        open_dataset("snufilm", root=tmp_path, difficulty="easy")
    assert "test-easy.txt:1" in str(caught.value) and listed in str(caught.value)


def test_snufilm_line_with_wrong_path_count_is_named(tmp_path):
    write_frame(tmp_path / "test/a/000001.png", value=1)
    (tmp_path / "test-medium.txt").write_text("test/a/000001.png test/a/000001.png\n")
    with raises_naming(tmp_path / "test-medium.txt"):
        open_dataset("snufilm", root=tmp_path, difficulty="medium")


def test_middlebury_missing_ground_truth_is_named(shared_data, tmp_path):
    folder = tmp_path / "other-color-twoframes/other-data/Venus"
    folder.mkdir(parents=True)
    (tmp_path / "other-gt-interp").mkdir()
    for name in ("frame10.png", "frame11.png"):
        shutil.copy(shared_data / "middlebury/other-color-twoframes/other-data/Venus" / name, folder / name)
    with raises_naming(tmp_path / "other-gt-interp/Venus/frame10i11.png"):
        open_dataset("middlebury", root=tmp_path, mode="twoframes")


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n truncated"])
def test_corrupt_image_is_named(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with raises_naming(path):
        read_image(path)


def test_truncated_png_inside_a_dataset_is_named(tmp_path):
    make_vimeo(tmp_path)
    broken = tmp_path / "sequences/00001/0001/im5.png"
    noise = np.random.default_rng(0).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    Image.fromarray(noise).save(broken)
    # Cut inside the pixel data (IDAT), as an interrupted download would.
    broken.write_bytes(broken.read_bytes()[:200])
    dataset = open_dataset("vimeo_septuplet", root=tmp_path, split="test")
    with raises_naming(broken):
        dataset[0]


def test_unsupported_pixel_format_is_named(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), dtype=np.float32), "F").save(path)
    with raises_naming(path):
        read_image(path)


def test_frames_of_different_sizes_are_named(tmp_path):
    make_vimeo(tmp_path)
    odd = tmp_path / "sequences/00001/0001/im6.png"
    write_frame(odd, value=6, size=(14, 10))
    dataset = open_dataset("vimeo_septuplet", root=tmp_path, split="test")
    with raises_naming(odd):
        dataset[0]
    for number in range(4):
        write_frame(tmp_path / "user" / f"{number}.png", value=number, size=(12, 10) if number != 2 else (12, 11))
    with raises_naming(tmp_path / "user" / "2.png"):
        open_dataset("frames", root=tmp_path / "user")[0]


def test_too_few_frames_for_a_window_are_named(tmp_path):
    for number in range(6):
        write_frame(tmp_path / "hd" / "short_video" / f"{number}.png", value=number)
    with raises_naming(tmp_path / "hd" / "short_video"):
        open_dataset("hd", root=tmp_path / "hd")
    for number in range(3):
        write_frame(tmp_path / "three" / f"{number}.png", value=number)
    with raises_naming(tmp_path / "three"):
        open_dataset("frames", root=tmp_path / "three")
    video = tmp_path / "five_frames.mp4"
    write_tiny_video(video, frame_count=5)
    with raises_naming(video):
        open_dataset("video", path=video)
    assert len(open_dataset("video", path=video, window="four")) == 2


def test_corrupt_video_is_named(tmp_path):
    path = tmp_path / "garbage.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with raises_naming(path):
        open_dataset("video", path=path)


def test_bad_options_are_rejected(shared_data):
    root = shared_data / "vimeo_septuplet"
    with pytest.raises(DatasetError, match="split"):
        open_dataset("vimeo_septuplet", root=root, split="val")
    with pytest.raises(DatasetError, match=r"crop 300x300 does not fit \S*sequences/00001/0001 of size 448x256"):
        open_dataset("vimeo_septuplet", root=root, split="train", crop_size=300)[0]
    with pytest.raises(DatasetError, match="crop_sampler"):
        open_dataset("vimeo_septuplet", root=root, split="train", crop_sampler="random")[0]
    with pytest.raises(DatasetError, match="difficulty"):
        open_dataset("snufilm", root=root, difficulty="insane")
    with pytest.raises(DatasetError, match="mode"):
        open_dataset("middlebury", root=root, mode="fourframes")
