"""``python -m omniclip`` runs the command line (also under ``torchrun``)."""

import sys

from omniclip.cli import main

sys.exit(main())
