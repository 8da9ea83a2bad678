"""What data modules and models agree on without importing each other."""

# A target with this value counts in no loss or metric (cross-entropy's own default).
IGNORE_INDEX = -100
# A sample index that pads the last evaluation batch; datasets give it IGNORE_INDEX targets.
PAD_INDEX = -1
