"""Readers on the real sample data in ../shared/data and on small fixtures in the official layouts."""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from savfi_core.data import (
    DatasetError,
    Sample,
    clip_path,
    collate_samples,
    natural_sort_key,
    open_dataset,
    read_image,
)


# ---------------------------------------------------------------- helpers


def write_png16(path: Path, pixels: np.ndarray, color_type: int) -> None:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour PNGs).

    color_type: 0 grey [H, W], 2 RGB [H, W, 3], 4 grey+alpha [H, W, 2], 6 RGBA [H, W, 4].
    """
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1).astype(">u2")
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def write_frame(path: Path, value: int, size=(12, 10)) -> None:
    """A tiny RGB PNG whose pixels all equal (value, value+1, value+2): the frame is identifiable."""
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = (value, value + 1, value + 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def frame_value(image: torch.Tensor) -> int:
    """Inverse of write_frame: the value a tiny frame was written with."""
    return int(round(float(image[0, 0, 0]) * 255))


# ---------------------------------------------------------------- read_image


def test_read_image_matches_pil_on_real_png(shared_data):
    path = shared_data / "vimeo_septuplet/sequences/00001/0001/im4.png"
    image = read_image(path)
    expected = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    assert image.dtype == torch.float32 and image.shape == (3, 256, 448)
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1))


def test_read_image_converts_grey_alpha_palette_and_bilevel(tmp_path):
    rgb = np.array([[[10, 20, 30], [200, 100, 0]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    grey = np.array([[0, 128], [64, 255]], dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([grey, 255 - grey]), "LA").save(tmp_path / "grey_alpha.png")
    Image.fromarray(np.dstack([rgb, np.full((2, 2), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).quantize(colors=4).save(tmp_path / "palette.png")
    Image.fromarray(grey > 100).save(tmp_path / "bilevel.png")

    expected_grey = torch.from_numpy(grey / 255.0).float().expand(3, 2, 2)
    assert torch.equal(read_image(tmp_path / "grey.png"), expected_grey)
    assert torch.equal(read_image(tmp_path / "grey_alpha.png"), expected_grey)
    # Alpha is dropped, the stored colour kept.
    assert torch.equal(read_image(tmp_path / "rgba.png"), torch.from_numpy(rgb / 255.0).float().permute(2, 0, 1))
    # 4 colours fit a 4-entry palette exactly.
    assert torch.equal(read_image(tmp_path / "palette.png"), torch.from_numpy(rgb / 255.0).float().permute(2, 0, 1))
    assert torch.equal(read_image(tmp_path / "bilevel.png"), torch.from_numpy((grey > 100) * 1.0).float().expand(3, 2, 2))


def test_read_image_keeps_full_16_bit_precision(tmp_path):
    rgb16 = np.array([[[0, 1000, 65535], [300, 40000, 12345]]], dtype=np.uint16)
    grey16 = np.array([[0, 257, 65535]], dtype=np.uint16)
    write_png16(tmp_path / "rgb16.png", rgb16, color_type=2)
    write_png16(tmp_path / "rgba16.png", np.dstack([rgb16, np.full((1, 2), 9, np.uint16)]), color_type=6)
    write_png16(tmp_path / "grey16.png", grey16, color_type=0)
    write_png16(tmp_path / "grey_alpha16.png", np.dstack([grey16, grey16[:, ::-1]]), color_type=4)

    expected_rgb = torch.from_numpy(rgb16 / 65535.0).float().permute(2, 0, 1)
    expected_grey = torch.from_numpy(grey16 / 65535.0).float().expand(3, 1, 3)
    # 1000/65535 is not a multiple of 1/255: an 8-bit detour could not give these values.
    assert torch.allclose(read_image(tmp_path / "rgb16.png"), expected_rgb, atol=1e-7, rtol=0)
    assert torch.allclose(read_image(tmp_path / "rgba16.png"), expected_rgb, atol=1e-7, rtol=0)
    assert torch.allclose(read_image(tmp_path / "grey16.png"), expected_grey, atol=1e-7, rtol=0)
    assert torch.allclose(read_image(tmp_path / "grey_alpha16.png"), expected_grey, atol=1e-7, rtol=0)


def test_natural_sort_orders_numbers_by_value():
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.png"]
    assert sorted(names, key=natural_sort_key) == ["frame1.png", "frame2.png", "Frame3.png", "frame10.png"]


# ---------------------------------------------------------------- Vimeo-90K


def test_vimeo_septuplet_test_split_is_full_frames_in_list_order(shared_data):
    root = shared_data / "vimeo_septuplet"
    dataset = open_dataset("vimeo_septuplet", root=root, split="test")
    assert len(dataset) == 8
    listed = (root / "sep_testlist.txt").read_text().split()
    assert [dataset[index].name for index in range(8)] == listed
    sample = dataset[2]
    assert isinstance(sample, Sample)
    assert sample.frames.shape == (7, 3, 256, 448) and sample.frames.dtype == torch.float32
    assert sample.valid.dtype == torch.bool and sample.valid.all()
    assert sample.target_index == 3
    assert torch.equal(sample.target, read_image(root / "sequences" / listed[2] / "im4.png"))
    assert torch.equal(sample.frames[0], read_image(root / "sequences" / listed[2] / "im1.png"))


def _locate_crop(crop: torch.Tensor, full: torch.Tensor) -> tuple[int, bool]:
    """(left, flipped) such that crop == full[..., left:left+w] (time-reversed when flipped)."""
    width = crop.shape[-1]
    for flipped, source in ((False, full), (True, full.flip(0))):
        # Vimeo frames are 256 high, so a 256x256 crop can only slide horizontally.
        for left in range(full.shape[-1] - width + 1):
            if torch.equal(source[0, 0, 0, left : left + width], crop[0, 0, 0]) and torch.equal(
                source[..., left : left + width], crop
            ):
                return left, flipped
    raise AssertionError("the training crop is no sub-window of the full septuplet")


def test_vimeo_septuplet_train_crops_repeat_per_seed_and_change_with_it(shared_data):
    root = shared_data / "vimeo_septuplet"
    full_dataset = open_dataset("vimeo_septuplet", root=root, split="train", augment=False)
    full = [full_dataset[index].frames for index in range(len(full_dataset))]
    first = open_dataset("vimeo_septuplet", root=root, split="train", seed=1)
    again = open_dataset("vimeo_septuplet", root=root, split="train", seed=1)
    other = open_dataset("vimeo_septuplet", root=root, split="train", seed=2)
    assert len(first) == 8
    crops = {name: [dataset[index] for index in range(8)] for name, dataset in (("first", first), ("other", other))}
    placements = {}
    for name, samples in crops.items():
        for index, sample in enumerate(samples):
            assert sample.frames.shape == (7, 3, 256, 256) and sample.target_index == 3 and sample.valid.all()
            placements[name, index] = _locate_crop(sample.frames, full[index])
    assert all(torch.equal(crops["first"][index].frames, again[index].frames) for index in range(8))
    assert [placements["first", i] for i in range(8)] != [placements["other", i] for i in range(8)]
    flips = {flipped for (_, flipped) in placements.values()}
    assert flips == {True, False}, "16 draws with p=1/2 should include both flipped and unflipped"
    first.set_epoch(1)
    assert any(not torch.equal(first[index].frames, crops["first"][index].frames) for index in range(8))


def test_vimeo_triplet_official_layout(shared_data, tmp_path):
    source = shared_data / "vimeo_septuplet" / "sequences" / "00001" / "0001"
    for entry in ("00001/0001", "00001/0002"):
        folder = tmp_path / "sequences" / entry
        folder.mkdir(parents=True)
        for position in (1, 2, 3):
            shutil.copy(source / f"im{position + 2}.png", folder / f"im{position}.png")
    (tmp_path / "tri_trainlist.txt").write_text("00001/0001\n")
    (tmp_path / "tri_testlist.txt").write_text("00001/0002\n\n")
    test = open_dataset("vimeo_triplet", root=tmp_path, split="test")
    assert len(test) == 1 and test[0].name == "00001/0002"
    assert test[0].frames.shape == (3, 3, 256, 448) and test[0].target_index == 1
    assert torch.equal(test[0].target, read_image(source / "im4.png"))
    train = open_dataset("vimeo_triplet", root=tmp_path, split="train", crop_size=(64, 96), seed=3)
    assert train[0].frames.shape == (3, 3, 64, 96) and train[0].target_index == 1


# ---------------------------------------------------------------- Middlebury


def test_middlebury_allframes_is_rubberwhale_on_the_four_frame_grid(shared_data):
    root = shared_data / "middlebury"
    with pytest.warns(UserWarning, match="skipped 11 of 12"):
        dataset = open_dataset("middlebury", root=root, mode="allframes")
    assert len(dataset) == 1
    assert len(dataset.skipped_sequences) == 11 and "RubberWhale" not in dataset.skipped_sequences
    sample = dataset[0]
    assert sample.name == "RubberWhale" and sample.target_index == 3
    assert sample.frames.shape == (7, 3, 388, 584)
    assert sample.valid.tolist() == [True, False, True, True, True, False, True]
    assert torch.isnan(sample.frames[[1, 5]]).all()
    assert not torch.isnan(sample.frames[[0, 2, 3, 4, 6]]).any()
    folder = root / "other-color-allframes/other-data/RubberWhale"
    for position, number in zip((0, 2, 4, 6), (9, 10, 11, 12)):
        assert torch.equal(sample.frames[position], read_image(folder / f"frame{number:02d}.png"))
    assert torch.equal(sample.target, read_image(root / "other-gt-interp/RubberWhale/frame10i11.png"))


def test_middlebury_twoframes_has_all_twelve_sorted(shared_data):
    root = shared_data / "middlebury"
    dataset = open_dataset("middlebury", root=root, mode="twoframes")
    assert len(dataset) == 12
    names = [dataset.sample_info(index)["name"] for index in range(12)]
    assert names == sorted(names) and names[0] == "Beanbags" and names[-1] == "Walking"
    sample = dataset[names.index("Venus")]
    assert sample.frames.shape == (3, 3, 380, 420) and sample.valid.all() and sample.target_index == 1
    folder = root / "other-color-twoframes/other-data/Venus"
    assert torch.equal(sample.frames[0], read_image(folder / "frame10.png"))
    assert torch.equal(sample.frames[2], read_image(folder / "frame11.png"))
    assert torch.equal(sample.target, read_image(root / "other-gt-interp/Venus/frame10i11.png"))


# ---------------------------------------------------------------- HD, SNU-FILM, frames


def test_hd_windows_of_seven_with_stride_two_and_last_aligned_to_end(tmp_path):
    for video, count in (("video10", 12), ("video2", 10)):
        for number in range(count):
            write_frame(tmp_path / video / f"{number + 1:05d}.png", value=number)
    dataset = open_dataset("hd", root=tmp_path)
    # video2 sorts before video10 (natural order); 10 frames: starts 0, 2, +3; 12 frames: 0, 2, 4, +5
    assert [dataset[index].name for index in range(len(dataset))] == [
        "video2/00001-00007", "video2/00003-00009", "video2/00004-00010",
        "video10/00001-00007", "video10/00003-00009", "video10/00005-00011", "video10/00006-00012",
    ]
    sample = dataset[6]
    assert sample.frames.shape == (7, 3, 10, 12) and sample.valid.all() and sample.target_index == 3
    assert [frame_value(frame) for frame in sample.frames] == list(range(5, 12))


def _snufilm_fixture(root: Path) -> list[str]:
    """Frames of one GOPRO video and the official-format list lines that name them."""
    prefix = "data/SNU-FILM/test/GOPRO_test/GOPR0384_11_00"
    for number in range(1, 12):
        write_frame(root / "test/GOPRO_test/GOPR0384_11_00" / f"{number:06d}.png", value=10 * number)
    triplets = [f"{prefix}/{a:06d}.png {prefix}/{a + 2:06d}.png {prefix}/{a + 4:06d}.png" for a in (1, 5)]
    (root / "test-hard.txt").write_text("\n".join(triplets) + "\n")
    meta = [" ".join(f"{prefix}/{number:06d}.png" for number in (3, 5, 6, 7, 9))]
    (root / "test-hard-meta.txt").write_text("\n".join(meta) + "\n")
    return triplets


def test_snufilm_resolves_official_list_paths_under_root(tmp_path):
    root = tmp_path / "SNU-FILM"
    _snufilm_fixture(root)
    dataset = open_dataset("snufilm", root=root, difficulty="hard")
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample.name == "test/GOPRO_test/GOPR0384_11_00/000007.png"
    assert sample.frames.shape == (3, 3, 10, 12) and sample.valid.all() and sample.target_index == 1
    assert [frame_value(frame) for frame in sample.frames] == [50, 70, 90]


def test_snufilm_meta_places_five_frames_on_the_septuplet_grid(tmp_path):
    root = tmp_path / "SNU-FILM"
    _snufilm_fixture(root)
    sample = open_dataset("snufilm", root=root, difficulty="hard", meta=True)[0]
    assert sample.target_index == 3 and sample.name.endswith("000006.png")
    assert sample.valid.tolist() == [True, False, True, True, True, False, True]
    assert torch.isnan(sample.frames[[1, 5]]).all()
    assert [frame_value(sample.frames[position]) for position in (0, 2, 3, 4, 6)] == [30, 50, 60, 70, 90]


def test_frames_reader_gives_four_frame_windows_in_natural_order(tmp_path):
    for number in range(1, 13):  # frame1 .. frame12: lexical order would put frame10 after frame1
        write_frame(tmp_path / "clip" / f"frame{number}.png", value=number)
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    dataset = open_dataset("frames", root=tmp_path / "clip")
    assert len(dataset) == 9
    sample = dataset[7]
    assert sample.name == "clip/frame9-frame10" and sample.target_index == 3
    assert sample.valid.tolist() == [True, False, True, False, True, False, True]
    assert torch.isnan(sample.frames[[1, 3, 5]]).all()
    assert [frame_value(sample.frames[position]) for position in (0, 2, 4, 6)] == [8, 9, 10, 11]
    assert len(open_dataset("frames", root=tmp_path / "clip", stride=4)) == 3


def test_video_reader_septuplets_and_four_frame_windows():
    path = clip_path("carphone")
    septuplets = open_dataset("video", path=path, stride=10, crop=(8, 16, 64, 96))
    assert len(septuplets) == 12  # starts 0, 10, ..., 110 within 120 frames
    sample = septuplets[3]
    assert sample.frames.shape == (7, 3, 64, 96) and sample.valid.all() and sample.target_index == 3
    assert sample.name == "carphone_pristine.mp4:30-36"
    assert septuplets.fps == pytest.approx(30000 / 1001)
    full = open_dataset("video", path=path, stride=10)[3]
    assert torch.equal(full.frames[:, :, 8:72, 16:112], sample.frames)
    four = open_dataset("video", path=path, window="four", stride=50)
    assert len(four) == 3 and four.sample_info(1)["frame_indices"] == [50, None, 51, None, 52, None, 53]
    septuplet_from_frame_50 = open_dataset("video", path=path)[50]
    assert torch.equal(four[1].frames[[0, 2, 4, 6]], septuplet_from_frame_50.frames[:4])
    assert torch.isnan(four[1].frames[3]).all()


def write_tiny_video(path: Path, frame_count: int, size: int = 32) -> None:
    """An MPEG-4 video of ``frame_count`` frames of smooth gradients (encoded with PyAV)."""
    import av

    ramp = np.linspace(0, 1, size)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for number in range(frame_count):
            red = np.broadcast_to(ramp[None, :] * 200 + 5 * number, (size, size))
            green = np.broadcast_to(ramp[:, None] * 150 + 20, (size, size))
            pixels = np.stack([red, green, np.full((size, size), 90.0)], axis=2).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_downscale_is_rounded_block_average(tmp_path):
    path = tmp_path / "tiny.mp4"
    write_tiny_video(path, frame_count=8)
    full = open_dataset("video", path=path)
    halved = open_dataset("video", path=path, downscale=2)
    assert len(full) == 2 and full.fps == pytest.approx(10)
    assert halved[1].frames.shape == (7, 3, 16, 16)
    # Block means of the full-size decode, rounded half up (block sums of 4 integers end in .0, .25, .5 or .75).
    expected = torch.floor(torch.nn.functional.avg_pool2d(full[1].frames * 255, 2) + 0.5) / 255
    assert torch.allclose(halved[1].frames, expected, atol=1e-6)


# ---------------------------------------------------------------- batching


def test_collate_batches_samples_and_rejects_mismatches(shared_data):
    dataset = open_dataset("vimeo_septuplet", root=shared_data / "vimeo_septuplet", split="train")
    batch = collate_samples([dataset[0], dataset[1], dataset[2]])
    assert batch.frames.shape == (3, 7, 3, 256, 256) and batch.valid.shape == (3, 7)
    assert batch.name == ["00001/0001", "00001/0002", "00001/0003"] and batch.target_index == 3
    assert batch.target.shape == (3, 3, 256, 256)
    assert torch.equal(batch.target[1], dataset[1].frames[3])
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_samples)
    assert next(iter(loader)).frames.shape == (4, 7, 3, 256, 256)

    full = open_dataset("vimeo_septuplet", root=shared_data / "vimeo_septuplet", split="test")[0]
    with pytest.raises(DatasetError, match="00002/0001"):
        collate_samples([dataset[0], full])
    triplet = Sample(frames=torch.zeros(7, 3, 256, 256), valid=torch.ones(7, dtype=torch.bool), target_index=2, name="odd")
    with pytest.raises(DatasetError, match="target_index 2 of 'odd'"):
        collate_samples([dataset[0], triplet])
    with pytest.raises(DatasetError, match="empty"):
        collate_samples([])


def test_open_dataset_rejects_unknown_names():
    with pytest.raises(DatasetError, match="unknown dataset 'vimeo'"):
        open_dataset("vimeo", root=".")
