"""Data distribution across data-parallel ranks.

One *global* batch of ``global_batch_size`` samples is drawn from a permutation that
depends only on the seed and the epoch, never on the number of ranks; each
data-parallel rank takes its own contiguous slice of it. The union of the ranks'
batches is therefore exactly the batch a single process would see, which is what
makes every strategy numerically comparable to single-device training.

Training drops the remainder of an epoch (fewer than ``global_batch_size`` samples,
different ones every epoch because of the reshuffle) so that every rank runs the same
number of full steps. Evaluation keeps every sample exactly once: the last global
batch is padded with the index ``-1``, which datasets turn into an ignored target.

The sampler is a ``DistributedSampler`` because Lightning (``use_distributed_sampler``,
as its documentation says) gives every loader of a distributed run that has none one of
its own over the data-parallel ranks, which is what distributes a user's plain data
module, and leaves a loader that has one as it is: these, already sharded.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler

from scaletrain.conventions import PAD_INDEX


class GlobalBatchSampler(DistributedSampler[list[int]]):
    """Yields this rank's slice of every global batch, as a list of sample indices.

    ``DistributedSampler``'s attributes keep its meaning: ``dataset`` (only its length is
    read), ``num_samples`` (indices this rank yields per epoch, padding included) and
    ``total_size`` (those of all ranks); ``len()`` counts batches.
    """

    def __init__(
        self,
        num_samples: int,
        global_batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        if global_batch_size % num_replicas:
            raise ValueError(
                f"data.batch_size={global_batch_size} must be divisible by the data-parallel "
                f"size {num_replicas}"
            )
        super().__init__(range(num_samples), num_replicas, rank, shuffle, seed, drop_last)
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // num_replicas
        self.num_samples = len(self) * self.local_batch_size
        self.total_size = len(self) * global_batch_size
        # Batches of the current epoch already trained on, restored by a mid-epoch resume.
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch``; Lightning calls this at the start of every epoch."""
        if epoch != self.epoch:
            self.skip_batches = 0
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.dataset) // self.global_batch_size
        return -(-len(self.dataset) // self.global_batch_size)

    def global_order(self) -> torch.Tensor:
        """All indices of this epoch in global order, padded or truncated to full batches."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(len(self.dataset), generator=generator)
        else:
            order = torch.arange(len(self.dataset))
        if self.total_size <= len(self.dataset):
            return order[: self.total_size]
        padding = torch.full((self.total_size - len(self.dataset),), PAD_INDEX, dtype=order.dtype)
        return torch.cat([order, padding])

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_order().view(len(self), self.global_batch_size)
        start = self.rank * self.local_batch_size
        local = batches[:, start : start + self.local_batch_size]
        for batch in local[self.skip_batches :]:
            yield batch.tolist()
        self.skip_batches = 0  # a resumed epoch skips its trained batches once
