"""Where things happen in long videos: a timeline of one video, moment search over a collection, report pages.

``omniclip.timeline(model, "long.mp4", classes=[...])`` scores every window of a video and finds segments
(docs/timeline.md). ``omniclip index`` / ``omniclip search`` embed every window of many videos into an index on disk
and rank windows against a text query (``index.py``).
"""

from omniclip.timeline.scores import Timeline, timeline
from omniclip.timeline.segments import Segment, SegmentConfig
from omniclip.timeline.windows import WindowSpec

__all__ = ["Segment", "SegmentConfig", "Timeline", "WindowSpec", "timeline"]
