"""Checkpoint files: atomic writes, resolving ``last``, reading what one holds, consolidating."""
