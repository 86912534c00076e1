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
