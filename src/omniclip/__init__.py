"""omniclip: CLIP adapted to video recognition (OmniCLIP, arXiv 2408.06158)."""

__version__ = "0.1.0"

# The two-line API (docs/predict.md). Imported eagerly on purpose: the submodule ``omniclip.predict`` would
# otherwise shadow a lazily provided function of the same name once anything imports the submodule.
from omniclip.predict import load_model, predict  # noqa: E402, F401
