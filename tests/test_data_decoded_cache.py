"""Decoded clips kept on disk (``decode_video(persist=True)``): the next process reads, not decodes."""
from __future__ import annotations

import os

import pytest
import torch

from savfi_core.data import video
from savfi_core.data.clips import CLIP_FILES, clip_path


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(video.DECODED_CACHE_VARIABLE, str(tmp_path / "decoded"))
    video._decode_video_cached.cache_clear()
    yield tmp_path / "decoded"
    video._decode_video_cached.cache_clear()


def test_persisted_frames_are_read_back_identical_without_decoding(fresh_cache, monkeypatch):
    path = clip_path("carphone")
    downscale = CLIP_FILES["carphone"][1]
    decoded = video.decode_video(path, downscale, persist=True)
    assert len(list(fresh_cache.glob("*.npz"))) == 1
    video._decode_video_cached.cache_clear()  # as in a new process

    def no_decoding(*arguments, **keywords):
        raise AssertionError("decoded again although the frames were on disk")

    monkeypatch.setattr(video, "_decode", no_decoding)
    again = video.decode_video(path, downscale, persist=True)
    assert torch.equal(again.frames, decoded.frames) and again.fps == decoded.fps and again.frames.dtype == torch.uint8


def test_a_changed_file_or_cut_off_cache_decodes_again(fresh_cache, tmp_path):
    source = tmp_path / "clip.mp4"
    source.write_bytes(clip_path("carphone").read_bytes())
    first = video.decode_video(source, 2, persist=True)
    stored = next(fresh_cache.glob("*.npz"))
    stored.write_bytes(stored.read_bytes()[:100])  # a write cut off by a kill
    video._decode_video_cached.cache_clear()
    with pytest.warns(UserWarning, match="unreadable"):
        second = video.decode_video(source, 2, persist=True)
    assert torch.equal(second.frames, first.frames)
    status = source.stat()
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # another modification time: another key
    video._decode_video_cached.cache_clear()
    video.decode_video(source, 2, persist=True)
    assert len(list(fresh_cache.glob("*.npz"))) == 2


def test_cache_off_and_plain_decoding_write_nothing(fresh_cache, monkeypatch):
    video.decode_video(clip_path("carphone"), 2)  # persist defaults to False
    monkeypatch.setenv(video.DECODED_CACHE_VARIABLE, "off")
    video._decode_video_cached.cache_clear()
    video.decode_video(clip_path("carphone"), 2, persist=True)
    assert not fresh_cache.exists()
