"""Where the Hydra configs live: ``conf/`` at the repository root."""

import os
from pathlib import Path

# Overridable for installs outside the repository checkout.
CONFIG_DIR = os.environ.get(
    "SCALETRAIN_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf")
)
