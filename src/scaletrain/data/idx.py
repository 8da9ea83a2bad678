"""Reader and writer of the IDX format that MNIST is distributed in (plain or gzipped)."""

import gzip
import struct
from pathlib import Path

import numpy as np

# The third byte of an IDX file's magic number names the element type.
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


class IDXFormatError(ValueError):
    """A file that is not a complete IDX file."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file; a ``.gz`` suffix means gzip. Raises :class:`IDXFormatError`."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip raises these on truncated streams
        raise IDXFormatError(f"{path}: cannot be read as IDX ({error})") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise IDXFormatError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise IDXFormatError(
            f"{path}: truncated or oversized IDX file ({len(raw)} bytes, expected {expected} "
            f"for shape {shape})"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8 or int8) as IDX, gzipped when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
