"""``omniclip.data.throughput`` (``omniclip bench-data``): clips timed with the index cache off, then restored."""

from __future__ import annotations

from omniclip.data import decode
from omniclip.data.records import read_annotations
from omniclip.data.throughput import bench_records


def test_data_throughput_demuxes_every_clip_and_restores_the_index_cache(synthetic) -> None:
    records = read_annotations(synthetic.train, synthetic.root)
    decode.INDEX_CACHE.resize(7)
    try:
        decode.probe(records[-1].path)
        result = bench_records(records, source="synthetic", clips=4, num_frames=4, size=32, batch_size=2)
        # 6 videos read with the cache off (the probed one dropped); only the resolution probe after timing is kept
        assert decode.INDEX_CACHE.size == 7 and len(decode.INDEX_CACHE) == 1
    finally:
        decode.INDEX_CACHE.resize(512)
    assert (result.clips, result.workers, result.resolution) == (4, 0, "32x32") and result.clips_per_s > 0


def test_decode_limit_counts_the_frames_a_clip_decodes(tmp_path) -> None:
    """One keyframe: a clip decodes from the start up to its last sampled frame; all-intra files about the sampled
    frames, frame folders exactly them. The limit and the efficiency against it follow."""
    import numpy as np

    from omniclip.data.encode import write_video
    from omniclip.data.prepare import prepare_dataset
    from omniclip.data.records import VideoRecord, write_list
    from omniclip.data.throughput import _frames_decoded, decode_limit

    assert _frames_decoded([5, 15, 25, 35], [0]) == 36  # forward from frame 0 to 35
    assert _frames_decoded([5, 15, 25, 35], [0, 10, 20, 30]) == 6 + 10 + 10 + 10  # frames 2 apart: no seek needed
    assert _frames_decoded([5, 35], [0, 10, 20, 30]) == 6 + 6  # 25 frames ahead: seek to 30, decode 30..35
    assert _frames_decoded([5, 15, 25, 35], None) == 4
    frames = np.random.default_rng(0).integers(0, 255, (160, 32, 32, 3), dtype=np.uint8)  # segments 20 frames apart
    one_key = write_video(tmp_path / "v" / "one_key.mp4", frames, fps=12)  # x264's default: one keyframe here
    listing = write_list([VideoRecord(one_key, 0, 0)], tmp_path / "list.txt", tmp_path / "v")
    intra = prepare_dataset(listing, tmp_path / "intra", root=tmp_path / "v", short_side=32, gop=1)
    folders = prepare_dataset(listing, tmp_path / "frames", root=tmp_path / "v", short_side=32, fmt="frames")
    limits = {
        name: decode_limit(read_annotations(lst, root), num_frames=8, size=28, clips=8, fps=12.0)
        for name, lst, root in (
            ("one_key", listing, tmp_path / "v"),
            ("intra", intra.list_file, tmp_path / "intra"),
            ("frames", folders.list_file, tmp_path / "frames"),
        )
    }
    assert 140 < limits["one_key"].frames_per_clip <= 160  # from frame 0 up to the last of 8 segments
    # all-intra: a seek to each sampled frame, or forward through the few frames up to one less than SEEK_GAP ahead
    assert 8 <= limits["intra"].frames_per_clip < 0.2 * limits["one_key"].frames_per_clip
    assert limits["frames"].frames_per_clip == 8
    assert limits["frames"].convert_ms == 0 and all(lim.clips_per_s > 0 for lim in limits.values())
    assert limits["one_key"].mb_per_hour == round(one_key.stat().st_size / 1e6 / (160 / 12) * 3600, 1)
    folder_bytes = sum(f.stat().st_size for f in (tmp_path / "frames" / "one_key").iterdir())
    assert limits["frames"].mb_per_hour == round(folder_bytes / 1e6 / (160 / 12) * 3600, 1)  # fps given
    records = read_annotations(intra.list_file, tmp_path / "intra")
    result = bench_records(records, source="intra", clips=4, num_frames=8, size=28, batch_size=2, limit=limits["intra"])
    assert result.efficiency == round(result.clips_per_s_per_worker / limits["intra"].clips_per_s, 3)
    assert "| intra | 32x32 |" in result.row()


def test_bench_source_takes_turns_with_the_limit_and_reports_the_median_round(synthetic) -> None:
    """Each round measures the limit and then times its clips; the efficiency is the median of the rounds' ratios."""
    from omniclip.data.throughput import bench_source

    records = read_annotations(synthetic.train, synthetic.root)
    result = bench_source(records, source="synthetic", clips=6, rounds=3, num_frames=4, size=32, batch_size=2)
    assert result.clips == 6 and len(result.round_efficiencies) == 3
    assert result.efficiency == sorted(result.round_efficiencies)[1]
    assert result.limit is not None and result.limit.clips_per_s > 0
    assert result.row().endswith(
        f"{result.efficiency:.0%} ({min(result.round_efficiencies):.0%}-{max(result.round_efficiencies):.0%}) |"
    )
