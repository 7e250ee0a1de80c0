"""How one point's verdicts of a metric are coded against the previous point's (`rft_ray.results.verdicts`).

    0 PLAIN      numpy.packbits of the booleans (a metric's first point, or a subset of another size)
    1 XOR        numpy.packbits of the XOR of the two bitmaps
    2 GAPS       the positions of the images whose verdict changed, as little-endian uint16 gaps (written before
                 POSITIONS; still read)
    3 POSITIONS  the same positions, Elias-Fano coded: k (a LEB128 varint), then with L = floor(log2(n / k))
                 k + (n >> L) + 1 bits holding each position's high part in unary (bit (p >> L) + i set for the
                 i-th position), then its low L bits, k * L bits, most significant first (both numpy.packbits).
                 About k (2 + log2(n / k)) bits for k changes of n images, against 16 k for GAPS; vectorised.

A point is written as whichever of XOR and POSITIONS is smaller, PLAIN where there is nothing to code against.
"""
from __future__ import annotations

import numpy as np

PLAIN, XOR, GAPS, POSITIONS = 0, 1, 2, 3


def _bits(data: bytes, count: int, offset: int = 0) -> np.ndarray:
    available = (len(data) - offset) * 8
    if count > available:
        raise ValueError(f"it holds {available} bits where {count} are needed")
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8, offset=offset), count=count).astype(bool)


def _low_bits(k: int, n: int) -> int:
    return int(np.log2(n / k)) if k else n.bit_length()  # none changed: the unary part is one bit


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def _read_varint(data: bytes) -> tuple[int, int]:
    """(value, bytes read) of the LEB128 varint `data` starts with."""
    value = 0
    for i, byte in enumerate(data[:5]):
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, i + 1
    raise ValueError("its count is not a varint")


def positions_bytes(positions: np.ndarray, n: int) -> bytes:
    """The Elias-Fano coding of `positions` (sorted, distinct, each < n)."""
    k = len(positions)
    low_bits = _low_bits(k, n)
    upper = np.zeros(k + (n >> low_bits) + 1, dtype=bool)
    upper[(positions >> low_bits) + np.arange(k)] = True
    low = (positions[:, None] >> np.arange(low_bits - 1, -1, -1)) & 1
    return _varint(k) + np.packbits(upper).tobytes() + np.packbits(low.astype(bool)).tobytes()


def positions_of(data: bytes, n: int) -> np.ndarray:
    """The positions `positions_bytes` coded; ValueError where `data` does not hold k positions below n."""
    k, start = _read_varint(data)
    if k > n:
        raise ValueError(f"it says {k} positions among {n} images")
    low_bits = _low_bits(k, n)
    upper_len = k + (n >> low_bits) + 1
    upper = np.flatnonzero(_bits(data, upper_len, start))
    if len(upper) != k:
        raise ValueError(f"it holds {len(upper)} positions where it says {k}")
    low = _bits(data, k * low_bits, start + (upper_len + 7) // 8).reshape(k, low_bits).astype(np.int64)
    positions = ((upper - np.arange(k)) << low_bits) | (low @ (1 << np.arange(low_bits - 1, -1, -1, dtype=np.int64)))
    if k and (positions[-1] >= n or np.any(np.diff(positions) <= 0)):
        raise ValueError("its positions are not distinct images of the subset")
    return positions


def coded(ok: np.ndarray, before: np.ndarray | None, chain: bool) -> tuple[int, bytes]:
    """(coding, bytes) of one point's verdicts against the previous point's (module docstring)."""
    if not chain or before is None or len(before) != len(ok):
        return PLAIN, np.packbits(ok).tobytes()
    changed = ok != before
    listed = positions_bytes(np.flatnonzero(changed), len(ok))
    xor = np.packbits(changed).tobytes()
    return (POSITIONS, listed) if len(listed) < len(xor) else (XOR, xor)


def uncoded(coding: int, data: bytes, n: int, before: np.ndarray | None) -> np.ndarray:
    """The verdicts of a point from its coding; ValueError where they cannot be decoded."""
    if coding == PLAIN:
        return _bits(data, n)
    if before is None or len(before) != n:
        raise ValueError("it is stored against a previous point the file does not hold")
    if coding == XOR:
        return before ^ _bits(data, n)
    ok = before.copy()
    if coding == GAPS:
        ok[np.cumsum(np.frombuffer(data, dtype="<u2").astype(np.int64))] ^= True
    elif coding == POSITIONS:
        ok[positions_of(data, n)] ^= True
    else:
        raise ValueError(f"unknown coding {coding}")
    return ok
