"""scaletrain: a Lightning + Hydra template for training neural networks at scale."""

__version__ = "0.1.0"
