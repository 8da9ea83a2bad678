"""LightningDataModules. Every one shards its batches with :class:`GlobalBatchSampler`."""
