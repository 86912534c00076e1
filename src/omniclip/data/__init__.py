"""Video data: annotation lists, decoding, frame sampling, transforms, datasets, loaders and synthetic videos."""

from omniclip.data.dataset import VideoDataset, VideoItem
from omniclip.data.decode import DecodeError, VideoInfo, open_video, probe, read_frames
from omniclip.data.loader import ShardSampler, TrainSampler, VideoBatch, build_loader, collate_videos
from omniclip.data.records import VideoRecord, read_annotations, read_class_names
from omniclip.data.synthetic import Shape, SyntheticDataset, render_frame, write_synthetic_dataset
from omniclip.data.transforms import CLIP_MEAN, CLIP_STD, normalize

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DecodeError",
    "Shape",
    "ShardSampler",
    "SyntheticDataset",
    "TrainSampler",
    "VideoBatch",
    "VideoDataset",
    "VideoInfo",
    "VideoItem",
    "VideoRecord",
    "build_loader",
    "collate_videos",
    "normalize",
    "open_video",
    "probe",
    "read_annotations",
    "read_class_names",
    "read_frames",
    "render_frame",
    "write_synthetic_dataset",
]
