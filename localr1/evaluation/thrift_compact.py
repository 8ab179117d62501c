"""Thrift's compact protocol, read into plain values: what Parquet's footer and page headers
are written in. A struct becomes {field id: value}, a list a list, binary stays bytes; unknown
fields are read like any other, so headers from newer writers still parse.

Every length is checked against the bytes left and nesting is bounded, so a hostile file ends
in a ThriftError, never a huge allocation or a deep recursion.
"""

from __future__ import annotations

import struct

MAX_DEPTH = 32  # Parquet's own structs nest about 5 deep
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = \
    range(13)


class ThriftError(ValueError):
    """Bytes that are not a valid compact-protocol struct."""


class CompactReader:
    def __init__(self, data: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else min(end, len(data))

    def read_struct(self, depth: int = 0) -> dict[int, object]:
        if depth > MAX_DEPTH:
            raise ThriftError("structs nested too deeply")
        fields: dict[int, object] = {}
        last_id = 0
        while True:
            header = self._byte()
            kind = header & 0x0F
            if kind == _STOP:
                return fields
            delta = header >> 4
            field_id = last_id + delta if delta else _zigzag(self._varint())
            last_id = field_id
            if kind in (_TRUE, _FALSE):
                fields[field_id] = kind == _TRUE
            else:
                fields[field_id] = self._value(kind, depth)

    def _value(self, kind: int, depth: int) -> object:
        if kind in (_TRUE, _FALSE):  # only inside lists: one byte each
            return self._byte() == _TRUE
        if kind == _BYTE:
            value = self._byte()
            return value - 256 if value > 127 else value
        if kind in (_I16, _I32, _I64):
            return _zigzag(self._varint())
        if kind == _DOUBLE:
            return struct.unpack("<d", self._take(8))[0]
        if kind == _BINARY:
            return bytes(self._take(self._length()))
        if kind in (_LIST, _SET):
            header = self._byte()
            size = header >> 4
            if size == 15:
                size = self._length()
            self._bound(size)
            return [self._value(header & 0x0F, depth + 1) for _ in range(size)]
        if kind == _MAP:
            size = self._length()
            if not size:
                return {}
            types = self._byte()
            self._bound(2 * size)
            return {_hashable(self._value(types >> 4, depth + 1)):
                    self._value(types & 0x0F, depth + 1) for _ in range(size)}
        if kind == _STRUCT:
            return self.read_struct(depth + 1)
        raise ThriftError(f"unknown field type {kind}")

    def _byte(self) -> int:
        if self.pos >= self.end:
            raise ThriftError("ends in the middle of a struct")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def _take(self, n: int) -> memoryview | bytes:
        if n > self.end - self.pos:
            raise ThriftError("a length runs past the end")
        piece = self.data[self.pos:self.pos + n]
        self.pos += n
        return piece

    def _varint(self) -> int:
        value = shift = 0
        for _ in range(10):
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ThriftError("a varint longer than 10 bytes")

    def _length(self) -> int:
        size = self._varint()
        self._bound(size)
        return size

    def _bound(self, size: int) -> None:
        if size > self.end - self.pos:  # every element takes at least one byte
            raise ThriftError(f"a length of {size:,} runs past the end")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _hashable(key: object) -> object:
    """A map key as a dict key: a list becomes a tuple; a struct or a map cannot be one."""
    if isinstance(key, list):
        key = tuple(key)
    try:
        hash(key)
    except TypeError:
        raise ThriftError("a map key holds a struct or a map") from None
    return key
