"""Snappy's raw block format decompressed in pure Python (Parquet's default codec), so reading
a dataset needs no native library.

The declared length is checked against the caller's expectation before anything is allocated,
and every literal and copy against the input and output written so far.
"""

from __future__ import annotations


class SnappyError(ValueError):
    """Bytes that are not a valid snappy block, or not the size expected."""


def decompress(data: bytes | memoryview, expected_size: int) -> bytes:
    data = bytes(data)
    size, pos = _varint(data)
    if size != expected_size:
        raise SnappyError(f"snappy block says {size:,} bytes, the page {expected_size:,}")
    out = bytearray()
    end = len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # a literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                if pos + extra > end:
                    raise SnappyError("snappy literal length runs past the end")
                length = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > end or len(out) + length > size:
                raise SnappyError("snappy literal runs past the end")
            out += data[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            if pos + 1 > end:
                raise SnappyError("snappy copy runs past the end")
            length = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            if pos + width > end:
                raise SnappyError("snappy copy runs past the end")
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + width], "little")
            pos += width
        _copy(out, offset, length, size)
    if len(out) != size:
        raise SnappyError(f"snappy block holds {len(out):,} bytes, not {size:,}")
    return bytes(out)


def _copy(out: bytearray, offset: int, length: int, size: int) -> None:
    if not 0 < offset <= len(out) or len(out) + length > size:
        raise SnappyError("snappy copy refers outside the output")
    start = len(out) - offset
    if offset >= length:
        out += out[start:start + length]
        return
    pattern = bytes(out[start:])  # an overlapping copy repeats the last `offset` bytes
    whole, rest = divmod(length, offset)
    out += pattern * whole + pattern[:rest]


def _varint(data: bytes) -> tuple[int, int]:
    value = shift = 0
    for pos in range(min(5, len(data))):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + 1
        shift += 7
    raise SnappyError("snappy block has no valid length")
