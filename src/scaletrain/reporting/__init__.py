"""What a run leaves in its directory: the record of each attempt, metrics.json,
TensorBoard's entries, sweep summaries."""
