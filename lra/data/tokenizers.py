"""Byte-level tokenizer shared by the Text (IMDB) and Retrieval (AAN) tasks.

Token ids (fixed; 0 is padding): id = UTF-8 byte value + 1, so ids lie in 1..256 and a
vocabulary of 257 entries covers every document (the LRA configs use 512, which is a superset).
Documents are truncated to `max_len` bytes (not characters: a multi-byte character may be cut).
ListOps keeps its own symbol tokenizer in `lra.data.listops`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

BYTE_OFFSET = 1  # id = byte + BYTE_OFFSET; 0 stays free for padding
BYTE_VOCAB_SIZE = 256 + BYTE_OFFSET


def _as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, (bytes, bytearray)) else text.encode("utf-8")


def encode_bytes(text: str | bytes, max_len: int | None = None) -> np.ndarray:
    """One document -> int16 ids (UTF-8 byte + 1), truncated to `max_len` bytes."""
    data = _as_bytes(text)
    if max_len is not None:
        data = data[:max_len]
    return np.frombuffer(data, dtype=np.uint8).astype(np.int16) + BYTE_OFFSET


def decode_bytes(ids: Iterable[int]) -> str:
    """Ids -> text; padding (0) is dropped and invalid UTF-8 (a cut character) is replaced."""
    ids = np.asarray(ids, dtype=np.int64).ravel()
    ids = ids[ids != 0]
    if ids.size and (ids.min() < BYTE_OFFSET or ids.max() >= BYTE_VOCAB_SIZE):
        raise ValueError(f"byte token ids must lie in {BYTE_OFFSET}..{BYTE_VOCAB_SIZE - 1}")
    return bytes((ids - BYTE_OFFSET).astype(np.uint8)).decode("utf-8", errors="replace")


def encode_batch(texts: Iterable[str | bytes], max_len: int) -> np.ndarray:
    """Documents -> (N, max_len) int16 ids, truncated and padded with 0."""
    texts = list(texts)
    out = np.zeros((len(texts), max_len), dtype=np.int16)
    for row, text in enumerate(texts):
        data = _as_bytes(text)[:max_len]
        out[row, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        out[row, : len(data)] += BYTE_OFFSET
    return out
