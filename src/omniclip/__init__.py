"""omniclip: CLIP adapted to video recognition (OmniCLIP, arXiv 2408.06158)."""

__version__ = "0.1.0"
