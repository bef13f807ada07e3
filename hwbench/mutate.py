"""Deterministic mutations of media files, for ``hwbench fuzz``.

Each mutator takes the file's bytes and a seeded ``numpy`` generator and returns new bytes; the
table :data:`MUTATORS` is the vocabulary (adding one is adding a row). :func:`mutate` stacks one
to three of them. Everything is a function of ``(seed, number)``, so a campaign's file ``n`` can
be rebuilt exactly from its recipe.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Mutator = Callable[[bytes, bytes, np.random.Generator], bytes]


def _span(n: int, rng: np.random.Generator, most: int) -> tuple[int, int]:
    """A random (offset, length) inside ``n`` bytes, length 1..most."""
    length = int(rng.integers(1, max(2, min(most, n) + 1)))
    return int(rng.integers(0, max(1, n - length + 1))), length


def bit_flips(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Flip 1 to 32 single bits anywhere."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 33))):
        at = int(rng.integers(0, len(out)))
        out[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def byte_run(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite a run of 1 to 64 bytes with one value (0x00, 0xff or random) or noise."""
    out = bytearray(data)
    at, length = _span(len(out), rng, 64)
    choice = int(rng.integers(0, 4))
    if choice == 3:
        fill = rng.integers(0, 256, length, np.uint8).tobytes()
    else:
        fill = bytes([(0x00, 0xFF, int(rng.integers(0, 256)))[choice]]) * length
    out[at:at + length] = fill
    return bytes(out)


def truncate(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Cut the file anywhere after its first byte."""
    return data[:int(rng.integers(1, len(data)))]


def splice(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """The head of this file followed by the tail of another clip (a header over foreign data)."""
    head = int(rng.integers(1, len(data)))
    tail = int(rng.integers(0, len(other)))
    return data[:head] + other[tail:]


def chunk_insert(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Insert 1 to 4096 bytes of noise, or of another clip, at a random offset."""
    at = int(rng.integers(0, len(data) + 1))
    length = int(rng.integers(1, 4097))
    if rng.integers(0, 2):
        chunk = rng.integers(0, 256, length, np.uint8).tobytes()
    else:
        start, length = _span(len(other), rng, length)
        chunk = other[start:start + length]
    return data[:at] + chunk + data[at:]


def chunk_delete(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Delete 1 to 4096 bytes."""
    at, length = _span(len(data), rng, 4096)
    out = data[:at] + data[at + length:]
    return out or data[:1]


def chunk_duplicate(data: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    """Repeat a run of 1 to 4096 bytes right after itself, or somewhere else."""
    at, length = _span(len(data), rng, 4096)
    chunk = data[at:at + length]
    where = at + length if rng.integers(0, 2) else int(rng.integers(0, len(data) + 1))
    return data[:where] + chunk + data[where:]


#: Name -> mutator. Names appear in campaign reports and saved file names.
MUTATORS: dict[str, Mutator] = {
    "bitflip": bit_flips,
    "byterun": byte_run,
    "truncate": truncate,
    "splice": splice,
    "insert": chunk_insert,
    "delete": chunk_delete,
    "duplicate": chunk_duplicate,
}


def mutate(data: bytes, other: bytes, seed: int, number: int) -> tuple[bytes, list[str]]:
    """File ``number`` of campaign ``seed``: ``data`` with 1-3 stacked mutations; ``other`` is
    a second clip for splices and foreign chunks. Returns (bytes, names of the mutations)."""
    rng = np.random.default_rng([seed, number])
    names = list(MUTATORS)
    applied = [names[int(k)] for k in rng.integers(0, len(names), int(rng.integers(1, 4)))]
    for name in applied:
        if len(data) < 2:
            break
        data = MUTATORS[name](data, other, rng)
    return data, applied
