"""Files shipped inside the package: the CLIP BPE vocabulary and the embedded tiny CLIP (weights and its record)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
