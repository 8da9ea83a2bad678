"""Instantiation, config validation, run-directory bookkeeping."""
