"""OmniCLIP on top of our CLIP: Parallel Temporal Adapters, the Self-Prompt Generator, and the video classifier."""

from omniclip.model.build import build_model
from omniclip.model.config import VARIANTS, ModelConfig
from omniclip.model.omniclip import OmniCLIP
from omniclip.model.prompts import SelfPromptGenerator
from omniclip.model.temporal import ParallelTemporalAdapter

__all__ = ["VARIANTS", "ModelConfig", "OmniCLIP", "ParallelTemporalAdapter", "SelfPromptGenerator", "build_model"]
