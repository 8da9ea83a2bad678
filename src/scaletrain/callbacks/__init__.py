"""Callbacks that measure a run: memory of the model state, throughput."""
