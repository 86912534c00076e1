"""CLIP in our own code: the towers, architecture presets, checkpoint loading and the BPE tokenizer."""

from omniclip.clip.model import CLIP, FrameLayout, build_clip
from omniclip.clip.presets import PRESETS, CLIPConfig, TextConfig, VisionConfig, get_preset
from omniclip.clip.tokenizer import tokenize
from omniclip.clip.weights import load_clip, save_clip

__all__ = [
    "CLIP",
    "CLIPConfig",
    "FrameLayout",
    "PRESETS",
    "TextConfig",
    "VisionConfig",
    "build_clip",
    "get_preset",
    "load_clip",
    "save_clip",
    "tokenize",
]
