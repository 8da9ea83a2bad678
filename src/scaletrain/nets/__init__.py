"""Plain PyTorch networks: no Lightning, no distributed code."""
