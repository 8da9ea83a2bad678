"""Sampling text from a language model's net, one token at a time.

No key-value cache: each new token runs the net on the whole window again, which is
simple and fast enough for the small models and short samples this is for.
"""

import torch
from torch import nn


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def sampling_problems(max_new_tokens: object, temperature: object, top_k: object) -> list[str]:
    """What is wrong with the sampling settings, one line each, naming the setting."""
    problems = []
    if not is_integer(max_new_tokens) or max_new_tokens < 1:
        problems.append(f"max_new_tokens={max_new_tokens}: must be a positive integer")
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not 0 <= temperature < float("inf"):
        problems.append(f"temperature={temperature}: must be 0 (greedy) or a positive number")
    if top_k is not None and (not is_integer(top_k) or top_k < 1):
        problems.append(f"top_k={top_k}: must be a positive integer, or null for no top-k")
    return problems


@torch.inference_mode()
def sample(
    net: nn.Module,
    tokens: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``tokens`` (``(length,)`` or ``(batch, length)``) followed by ``max_new_tokens``
    sampled ones.

    Each step feeds the net the latest ``net.context_length`` tokens (the oldest are
    cropped) and draws the next token from the last position's logits divided by
    ``temperature``, restricted to the ``top_k`` most likely where given; temperature 0
    takes the most likely token (greedy). ``generator`` makes the draws reproducible.
    """
    problems = sampling_problems(max_new_tokens, temperature, top_k)
    if problems:
        raise ValueError("; ".join(problems))
    if tokens.numel() == 0:
        raise ValueError("tokens: empty; sampling needs at least one token to continue")
    single = tokens.dim() == 1
    sequence = tokens.unsqueeze(0) if single else tokens
    context_length = getattr(net, "context_length", None)
    was_training = net.training
    net.eval()
    try:
        for _ in range(max_new_tokens):
            window = sequence if context_length is None else sequence[:, -context_length:]
            logits = net(window)[:, -1, :].float()
            if temperature == 0:
                next_token = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None and top_k < logits.shape[-1]:
                    kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                next_token = torch.multinomial(probs, 1, generator=generator)
            sequence = torch.cat([sequence, next_token.to(sequence.dtype)], dim=1)
    finally:
        net.train(was_training)
    return sequence[0] if single else sequence
