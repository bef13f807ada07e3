"""Request patterns: which frame an editor asks for next. Pure functions of (length, seed).

Every generator is deterministic for a given seed, so two decoders (or two runs) see exactly the
same request sequence. Indices are always in ``range(frame_count)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

PATTERNS = ("random", "scrub", "play", "mixed")

#: Scrub steps are 1..SCRUB_MAX_STEP frames; the direction persists and flips with this chance,
#: as when a user drags the playhead one way, then back.
SCRUB_MAX_STEP = 10
SCRUB_FLIP = 0.15


def random_indices(frame_count: int, n: int, seed: int) -> list[int]:
    """``n`` uniformly random indices (with repeats allowed, as a user's clicks)."""
    rng = random.Random(seed)
    return [rng.randrange(frame_count) for _ in range(n)]


def _scrub_steps(frame_count: int, start: int, rng: random.Random) -> Iterator[int]:
    pos, direction = start, 1
    while True:
        yield pos
        if rng.random() < SCRUB_FLIP:
            direction = -direction
        step = rng.randint(1, SCRUB_MAX_STEP)
        if not 0 <= pos + direction * step < frame_count:
            direction = -direction  # the playhead hit an end: it turns around
        pos = min(max(pos + direction * step, 0), frame_count - 1)


def scrub_indices(frame_count: int, n: int, seed: int) -> list[int]:
    """A scrubbing playhead: a random walk from a random start, steps of +-1..10 frames."""
    rng = random.Random(seed)
    walk = _scrub_steps(frame_count, rng.randrange(frame_count), rng)
    return [next(walk) for _ in range(n)]


def play_indices(frame_count: int, n: int, start: int = 0) -> list[int]:
    """Playback: consecutive frames from ``start``, looping at the end."""
    return [(start + k) % frame_count for k in range(n)]


def mixed_indices(frame_count: int, n: int, seed: int, rate: float) -> list[int]:
    """An editing session: segments of 1-4 s of play (50%), scrub (30%) or random jumps (20%).

    The playhead carries over between segments (a scrub starts where playback stopped).
    """
    rng = random.Random(seed)
    out: list[int] = []
    pos = 0
    while len(out) < n:
        length = max(1, round(rng.uniform(1.0, 4.0) * rate))
        kind = rng.choices(("play", "scrub", "random"), weights=(5, 3, 2))[0]
        if kind == "play":
            seg = play_indices(frame_count, length, pos)
        elif kind == "scrub":
            walk = _scrub_steps(frame_count, pos, rng)
            seg = [next(walk) for _ in range(length)]
        else:
            seg = [rng.randrange(frame_count) for _ in range(length)]
        out.extend(seg)
        pos = seg[-1]
    return out[:n]


def pattern_indices(pattern: str, frame_count: int, n: int, seed: int, rate: float) -> list[int]:
    """The first ``n`` requests of ``pattern`` (one of :data:`PATTERNS`)."""
    if frame_count < 1:
        raise ValueError("the clip has no frames")
    if pattern == "random":
        return random_indices(frame_count, n, seed)
    if pattern == "scrub":
        return scrub_indices(frame_count, n, seed)
    if pattern == "play":
        return play_indices(frame_count, n)
    if pattern == "mixed":
        return mixed_indices(frame_count, n, seed, rate)
    raise ValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")
