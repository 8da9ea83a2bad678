"""Deterministic train/val/test splits that do not depend on the training seed."""

import torch


def random_split_indices(
    num_samples: int, fractions: dict[str, float], split_seed: int
) -> dict[str, torch.Tensor]:
    """Split ``range(num_samples)`` into named parts; ``train`` takes what the others leave.

    The same ``split_seed`` always gives the same split, so runs with different training
    seeds are evaluated on the same held-out samples.
    """
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(split_seed))
    parts, start = {}, 0
    for name, fraction in fractions.items():
        size = round(num_samples * fraction)
        parts[name] = order[start : start + size].sort().values
        start += size
    parts["train"] = order[start:].sort().values
    return parts
