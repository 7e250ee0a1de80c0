"""How one point's verdicts of a metric are coded against the previous point's (`rft_ray.results.verdicts`).

    0 PLAIN      numpy.packbits of the booleans (a metric's first point, or a subset of another size)
    1 XOR        numpy.packbits of the XOR of the two bitmaps
    2 GAPS       the positions of the images whose verdict changed, as little-endian uint16 gaps (when fewer than
                 1/16 of the images changed and no gap exceeds 65,535)

A point is written as GAPS where it can be, else XOR; PLAIN where there is nothing to code against. (Elias-Fano
coded positions, about k (2 + log2(n / k)) bits for k changes of n images, were tried: on real series of small
subsets they came out larger after zstd, which halves the uint16 gaps; docs/guides/analysis.md, "Cost".)
"""
from __future__ import annotations

import numpy as np

PLAIN, XOR, GAPS = 0, 1, 2


def _bits(data: bytes, count: int, offset: int = 0) -> np.ndarray:
    available = (len(data) - offset) * 8
    if count > available:
        raise ValueError(f"it holds {available} bits where {count} are needed")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=offset), count=count).astype(bool)


def coded(ok: np.ndarray, before: np.ndarray | None, chain: bool) -> tuple[int, bytes]:
    """(coding, bytes) of one point's verdicts against the previous point's (module docstring)."""
    if not chain or before is None or len(before) != len(ok):
        return PLAIN, np.packbits(ok).tobytes()
    changed = np.flatnonzero(ok != before)
    gaps = np.diff(changed, prepend=0)
    if len(changed) * 16 < len(ok) and (len(gaps) == 0 or gaps.max() < 2**16):
        return GAPS, gaps.astype("<u2").tobytes()
    return XOR, np.packbits(ok ^ before).tobytes()


def uncoded(coding: int, data: bytes, n: int, before: np.ndarray | None) -> np.ndarray:
    """The verdicts of a point from its coding; ValueError where they cannot be decoded."""
    if coding == PLAIN:
        return _bits(data, n)
    if before is None or len(before) != n:
        raise ValueError("it is stored against a previous point the file does not hold")
    if coding == XOR:
        return before ^ _bits(data, n)
    if coding != GAPS:
        raise ValueError(f"unknown coding {coding}")
    ok = before.copy()
    ok[np.cumsum(np.frombuffer(data, dtype="<u2").astype(np.int64))] ^= True
    return ok
