"""Rows of a Parquet file in pure Python: enough of the format for what `datasets` and pyarrow
write for string and integer columns (GSM8K's test split is Parquet, and pyarrow is too heavy
a dependency for reading one small file).

Covered: the footer (Thrift compact protocol, thrift_compact), row groups, data pages v1 and
v2, dictionary pages (PLAIN_DICTIONARY, RLE_DICTIONARY), PLAIN values, RLE/bit-packed
definition levels (optional columns and their nulls), and the codecs UNCOMPRESSED, SNAPPY
(snappy_codec) and GZIP (zlib). Anything else (other codecs, DELTA encodings, floats, nested
columns) is refused in one line.

A hostile file (truncated, wrong magic, absurd lengths) ends in one ParquetError line: every
offset and length is checked against the file, a page's decompressed size against what its
codec can expand to, and the number of rows against MAX_ROWS, so nothing hangs or allocates
far more than the file holds.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from localr1.errors import LocalR1Error
from localr1.evaluation import snappy_codec
from localr1.evaluation.thrift_compact import CompactReader, ThriftError
from localr1.models.safe_paths import shown_name

MAGIC = b"PAR1"
MAX_FILE_BYTES = 512 << 20
MAX_PAGE_BYTES = 64 << 20  # pyarrow writes 1 MB pages
MAX_ROWS = 1_000_000  # RLE can claim millions of nulls in a few bytes: a fixed bound
_MESSAGE_CHARS = 400
# The most each codec can expand its input: snappy's best is a 3-byte copy of 64 bytes,
# deflate's 1032:1.
_EXPANSION = {0: 1, 1: 22, 2: 1032}
_CODEC_NAMES = {3: "LZO", 4: "BROTLI", 5: "LZ4", 6: "ZSTD", 7: "LZ4_RAW"}
_TYPE_NAMES = {0: "BOOLEAN", 3: "INT96", 4: "FLOAT", 5: "DOUBLE", 7: "FIXED_LEN_BYTE_ARRAY"}
_INT_FORMATS = {1: ("i", 4), 2: ("q", 8)}  # INT32, INT64
_BYTE_ARRAY = 6
_TEXT_CONVERTED = {0, 4, 19}  # UTF8, ENUM, JSON
_TEXT_LOGICAL = {1, 4, 12}  # STRING, ENUM, JSON
_UNSIGNED_CONVERTED = {11, 12, 13, 14}  # UINT_8 .. UINT_64
_PLAIN, _PLAIN_DICTIONARY, _RLE, _RLE_DICTIONARY = 0, 2, 3, 8
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3


class ParquetError(LocalR1Error):
    """A Parquet file this reader cannot read: damaged, hostile, or using unsupported parts."""


class _Invalid(ValueError):
    """What is wrong, without the file's name (read_rows adds it)."""


@dataclass(frozen=True)
class _Column:
    name: str
    physical: int  # parquet Type
    optional: bool
    text: bool  # BYTE_ARRAY holding UTF-8 text
    unsigned: bool


def read_rows(path: Path | str, columns: list[str] | tuple[str, ...]) -> list[dict]:
    """Every row of `columns`, as dicts in file order; None for a null."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ParquetError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MB; not reading it")
        data = path.read_bytes()
    except OSError as exc:
        raise ParquetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return _rows(data, tuple(columns))
    except (_Invalid, ThriftError, snappy_codec.SnappyError, struct.error, zlib.error) as exc:
        raise ParquetError(shown_name(f"{path}: not a readable Parquet file ({exc})",
                                      _MESSAGE_CHARS)) from None
    except (TypeError, ValueError) as exc:  # a value of a type no check above expected
        raise ParquetError(shown_name(f"{path}: not a readable Parquet file "
                                      f"({type(exc).__name__}: {exc})", _MESSAGE_CHARS)) from None
    except _Unsupported as exc:  # names from the file: control characters shown, not sent
        raise ParquetError(shown_name(f"{path}: {exc}", _MESSAGE_CHARS)) from None


class _Unsupported(Exception):
    """A valid file using a part of Parquet this reader leaves out."""


def _rows(data: bytes, names: tuple[str, ...]) -> list[dict]:
    meta, footer_start = _footer(data)
    schema = _top_level_columns(_field(meta, 2, list, "schema"))
    for name in names:
        if name not in schema:
            raise _Unsupported(f"no column '{name}' (columns: {', '.join(schema)})")
        if schema[name] is None:
            raise _Unsupported(f"column '{name}' is nested; this reader takes flat columns")
    values: dict[str, list] = {name: [] for name in names}
    total = 0
    for group in _field(meta, 4, list, "row groups", default=[]):
        rows = _field(group, 3, int, "row count")
        total += rows
        if not 0 <= rows <= MAX_ROWS or total > MAX_ROWS:
            raise _Invalid(f"claims {total:,} rows (at most {MAX_ROWS:,} are read)")
        chunks = _field(group, 1, list, "column chunks")
        for name in names:
            chunk = _chunk_of(chunks, name)
            values[name] += _ColumnChunk(data, footer_start, schema[name], chunk, rows).read()
    return [dict(zip(names, row, strict=True)) for row in zip(*values.values(), strict=True)]


def _footer(data: bytes) -> tuple[dict, int]:
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise _Invalid("no PAR1 magic at its start and end")
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    if start < 4:
        raise _Invalid(f"its footer length {length:,} is longer than the file")
    return CompactReader(data, start, len(data) - 8).read_struct(), start


def _top_level_columns(elements: list) -> dict[str, _Column | None]:
    """The root's children by name; None for a group (nested data)."""
    if not elements or not all(isinstance(e, dict) for e in elements):
        raise _Invalid("its schema is empty")
    columns: dict[str, _Column | None] = {}
    pos = 1
    for _ in range(_children(elements[0])):
        if pos >= len(elements):
            raise _Invalid("its schema is shorter than it says")
        element = elements[pos]
        name = _text(_field(element, 4, bytes, "column name"))
        if _children(element):
            columns[name] = None
            pos = _after_subtree(elements, pos)
            continue
        pos += 1
        repetition = element.get(3, 0)
        if repetition == 2:
            columns[name] = None
            continue
        columns[name] = _column(name, element, optional=repetition == 1)
    return columns


def _column(name: str, element: dict, optional: bool) -> _Column:
    physical = _field(element, 1, int, f"type of '{name}'")
    converted = element.get(6)
    if not isinstance(converted, int):
        converted = None  # a converted type that is no number annotates nothing
    logical = element.get(10) if isinstance(element.get(10), dict) else {}
    text = physical == _BYTE_ARRAY and (converted in _TEXT_CONVERTED
                                        or bool(_TEXT_LOGICAL & set(logical)))
    integer = logical.get(10)
    unsigned = converted in _UNSIGNED_CONVERTED or (
        isinstance(integer, dict) and integer.get(2) is False)
    return _Column(name, physical, optional, text, unsigned)


def _children(element: dict) -> int:
    count = element.get(5, 0)
    if not isinstance(count, int) or count < 0:
        raise _Invalid("a schema element has an invalid child count")
    return count


def _after_subtree(elements: list, pos: int) -> int:
    remaining = 1
    while remaining:
        if pos >= len(elements):
            raise _Invalid("its schema is shorter than it says")
        remaining += _children(elements[pos]) - 1
        pos += 1
    return pos


def _chunk_of(chunks: list, name: str) -> dict:
    for chunk in chunks:
        meta = chunk.get(3) if isinstance(chunk, dict) else None
        if isinstance(meta, dict) and meta.get(3) == [name.encode()]:
            if chunk.get(1) is not None:
                raise _Unsupported(f"column '{name}' is kept in another file")
            return meta
    raise _Invalid(f"a row group has no data for column '{name}'")


class _ColumnChunk:
    """One column of one row group: its pages, decoded into `rows` values."""

    def __init__(self, data: bytes, footer_start: int, column: _Column, meta: dict,
                 rows: int) -> None:
        self.data, self.column, self.rows = data, column, rows
        self.codec = _field(meta, 4, int, "codec")
        if self.codec not in _EXPANSION:
            name = _CODEC_NAMES.get(self.codec, f"codec {self.codec}")
            raise _Unsupported(f"column '{column.name}' is compressed with {name}; this reader "
                               "takes uncompressed, SNAPPY and GZIP")
        if column.physical not in _INT_FORMATS and column.physical != _BYTE_ARRAY:
            kind = _TYPE_NAMES.get(column.physical, f"type {column.physical}")
            raise _Unsupported(f"column '{column.name}' is {kind}; this reader takes strings "
                               "and integers")
        data_offset = _field(meta, 9, int, "data page offset")
        dictionary_offset = meta.get(11)
        self.start = dictionary_offset if isinstance(dictionary_offset, int) and \
            4 <= dictionary_offset < data_offset else data_offset
        self.end = self.start + _field(meta, 7, int, "compressed size")
        if not 4 <= self.start <= self.end <= footer_start:
            raise _Invalid(f"column '{column.name}' lies outside the file")
        self.dictionary: list | None = None

    def read(self) -> list:
        values: list = []
        pos = self.start
        while len(values) < self.rows:
            if pos >= self.end:
                raise _Invalid(f"column '{self.column.name}' ends after {len(values):,} of "
                               f"{self.rows:,} values")
            reader = CompactReader(self.data, pos, self.end)
            header = reader.read_struct()
            page_type = _field(header, 1, int, "page type")
            size = _field(header, 2, int, "page size")
            stored = _field(header, 3, int, "compressed page size")
            if not 0 <= stored <= self.end - reader.pos or not 0 <= size <= MAX_PAGE_BYTES:
                raise _Invalid(f"a page of column '{self.column.name}' has an invalid size")
            body = memoryview(self.data)[reader.pos:reader.pos + stored]
            pos = reader.pos + stored
            if page_type == _DICTIONARY_PAGE:
                self._dictionary_page(_field(header, 7, dict, "dictionary header"), body, size)
            elif page_type == _DATA_PAGE:
                values += self._data_page(_field(header, 5, dict, "data header"), body, size,
                                          self.rows - len(values))
            elif page_type == _DATA_PAGE_V2:
                values += self._data_page_v2(_field(header, 8, dict, "data header v2"), body,
                                             size, self.rows - len(values))
        return values

    def _dictionary_page(self, header: dict, body: memoryview, size: int) -> None:
        if header.get(2, _PLAIN) not in (_PLAIN, _PLAIN_DICTIONARY):
            raise _Unsupported(f"column '{self.column.name}' has a dictionary that is not PLAIN")
        count = _field(header, 1, int, "dictionary size")
        self.dictionary = _plain(self._decompress(body, size), self.column, count)

    def _data_page(self, header: dict, body: memoryview, size: int, wanted: int) -> list:
        count = self._count(header, wanted)
        page = memoryview(self._decompress(body, size))
        levels = None
        if self.column.optional:
            if header.get(3, _RLE) != _RLE:
                raise _Unsupported(f"column '{self.column.name}' has BIT_PACKED levels")
            if len(page) < 4:
                raise _Invalid("a data page is shorter than its levels")
            length = int.from_bytes(page[:4], "little")
            if length > len(page) - 4:
                raise _Invalid("definition levels run past their page")
            levels = _hybrid(page[4:4 + length], 1, count)
            page = page[4 + length:]
        return self._values(header.get(2, _PLAIN), page, levels, count)

    def _data_page_v2(self, header: dict, body: memoryview, size: int, wanted: int) -> list:
        count = self._count(header, wanted)
        definition = _field(header, 5, int, "definition levels length")
        repetition = _field(header, 6, int, "repetition levels length")
        if min(repetition, definition) < 0 or repetition + definition > min(len(body), size):
            raise _Invalid("levels run past their page")
        levels = None
        if self.column.optional:
            levels = _hybrid(body[repetition:repetition + definition], 1, count)
        values = body[repetition + definition:]
        values_size = size - repetition - definition
        if header.get(7, True):
            page = memoryview(self._decompress(values, values_size))
        elif len(values) != values_size:
            raise _Invalid("an uncompressed page is not its stated size")
        else:
            page = values
        return self._values(header.get(4, _PLAIN), page, levels, count)

    def _count(self, header: dict, wanted: int) -> int:
        count = _field(header, 1, int, "value count")
        if not 0 <= count <= wanted:
            raise _Invalid(f"column '{self.column.name}' has more values than rows")
        return count

    def _values(self, encoding: int, page: memoryview, levels: list | None,
                count: int) -> list:
        present = count if levels is None else sum(levels)
        if encoding == _PLAIN:
            found = _plain(page, self.column, present)
        elif encoding in (_PLAIN_DICTIONARY, _RLE_DICTIONARY):
            if self.dictionary is None:
                raise _Invalid(f"column '{self.column.name}' uses a dictionary it does not have")
            if not len(page):
                raise _Invalid("a dictionary-encoded page is empty")
            indices = _hybrid(page[1:], page[0], present)
            if indices and max(indices) >= len(self.dictionary):
                raise _Invalid(f"column '{self.column.name}' refers past its dictionary")
            found = [self.dictionary[i] for i in indices]
        else:
            raise _Unsupported(f"column '{self.column.name}' uses encoding {encoding}; this "
                               "reader takes PLAIN and dictionaries")
        if levels is None:
            return found
        taken = iter(found)
        return [next(taken) if level else None for level in levels]

    def _decompress(self, body: memoryview, size: int) -> bytes:
        if size > len(body) * _EXPANSION[self.codec] + 64:
            raise _Invalid(f"a page claims {size:,} bytes, more than its codec can expand to")
        if self.codec == 0:
            if len(body) != size:
                raise _Invalid("an uncompressed page is not its stated size")
            return bytes(body)
        if self.codec == 1:
            return snappy_codec.decompress(body, size)
        inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header
        page = inflater.decompress(body, size + 1)
        if len(page) != size or not inflater.eof:
            raise _Invalid("a gzip page does not hold its stated size")
        return page


def _plain(page: memoryview | bytes, column: _Column, count: int) -> list:
    if column.physical in _INT_FORMATS:
        code, width = _INT_FORMATS[column.physical]
        if count < 0 or count * width > len(page):
            raise _Invalid(f"column '{column.name}' has fewer values than it says")
        if column.unsigned:
            code = code.upper()
        return list(struct.unpack_from(f"<{count}{code}", page))
    if count < 0 or count * 4 > len(page):
        raise _Invalid(f"column '{column.name}' has fewer values than it says")
    values: list = []
    pos = 0
    for _ in range(count):
        length = int.from_bytes(page[pos:pos + 4], "little")
        pos += 4
        if pos + length > len(page):
            raise _Invalid(f"a value of column '{column.name}' runs past its page")
        piece = bytes(page[pos:pos + length])
        pos += length
        values.append(_text(piece) if column.text else piece)
    return values


def _hybrid(buf: memoryview | bytes, width: int, count: int) -> list[int]:
    """`count` values of the RLE/bit-packed hybrid encoding (levels, dictionary indices)."""
    if width > 32:
        raise _Invalid(f"a bit width of {width}")
    out: list[int] = []
    pos = 0
    mask = (1 << width) - 1
    value_bytes = (width + 7) // 8
    while len(out) < count:
        header, pos = _varint(buf, pos)
        if header & 1:  # bit-packed groups of 8 values, width bytes each
            for _ in range(header >> 1):
                if len(out) >= count:
                    break
                if pos + width > len(buf):
                    raise _Invalid("bit-packed values run past their page")
                group = int.from_bytes(buf[pos:pos + width], "little")
                pos += width
                out += [(group >> (i * width)) & mask for i in range(min(8, count - len(out)))]
        else:  # one value repeated
            if pos + value_bytes > len(buf):
                raise _Invalid("a repeated value runs past its page")
            value = int.from_bytes(buf[pos:pos + value_bytes], "little")
            pos += value_bytes
            out += [value] * min(header >> 1, count - len(out))
    return out


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(5):
        if pos >= len(buf):
            raise _Invalid("levels or indices run past their page")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise _Invalid("an invalid run header")


def _field(struct_: dict, field_id: int, kind: type, what: str, default=None):
    value = struct_.get(field_id, default) if isinstance(struct_, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise _Invalid(f"its {what} is missing or invalid")
    return value


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid("a text value is not UTF-8") from None
