"""Text to token ids and back: what a corpus is prepared with, what bits per byte count,
and what sampling decodes.

Two codecs: plain bytes (vocabulary 256, a token is one UTF-8 byte) and byte-level BPE
trained with Hugging Face ``tokenizers`` and saved as ``tokenizer.json``. Byte-level BPE
first maps every byte to one character of a 256-character alphabet, so each token's
string has exactly as many characters as the bytes it stands for.
"""

from pathlib import Path
from typing import Protocol

import torch

BYTE_VOCAB_SIZE = 256


class Codec(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_bytes(self) -> torch.Tensor:
        """The number of bytes of text each token id stands for (int64, ``vocab_size``)."""
        ...


class ByteCodec:
    """Tokens are the text's UTF-8 bytes."""

    vocab_size = BYTE_VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        # a sample may stop inside a multi-byte character
        return bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self) -> torch.Tensor:
        return torch.ones(BYTE_VOCAB_SIZE, dtype=torch.long)


class BPECodec:
    """A byte-level BPE tokenizer saved by Hugging Face ``tokenizers`` (``tokenizer.json``)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer  # imported only where BPE data is used

        self.path = Path(path)
        self.tokenizer = Tokenizer.from_file(str(self.path))
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def token_bytes(self) -> torch.Tensor:
        special = {token.content for token in self.tokenizer.get_added_tokens_decoder().values()}
        tokens = (self.tokenizer.id_to_token(i) for i in range(self.vocab_size))
        lengths = [0 if token is None or token in special else len(token) for token in tokens]
        return torch.tensor(lengths, dtype=torch.long)
