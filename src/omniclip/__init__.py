"""omniclip: CLIP adapted to video recognition (OmniCLIP, arXiv 2408.06158)."""

__version__ = "0.1.0"

# Run configuration (docs/protocols.md): load_config("configs/few_shot/hmdb51_vitb16.yaml", ["protocol.shots=8"]).
from omniclip.config import RunConfig, load_config  # noqa: E402, F401

# The two-line API (docs/predict.md). Imported eagerly on purpose: the submodule ``omniclip.predict`` would
# otherwise shadow a lazily provided function of the same name once anything imports the submodule.
from omniclip.predict import load_model, predict  # noqa: E402, F401
from omniclip.timeline import timeline  # noqa: E402, F401  (segments of a long video, docs/timeline.md)
