"""The pure-Python Parquet reader against files pyarrow wrote (tests/fixtures/parquet, made by
make_parquet_fixture.py), and against hostile files built byte by byte here."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from localr1.evaluation import snappy_codec
from localr1.evaluation.parquet_reader import MAX_ROWS, ParquetError, read_rows
from localr1.evaluation.thrift_compact import CompactReader

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parquet"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
READABLE = [name for name in EXPECTED if name not in ("zstd", "nested")]


@pytest.mark.parametrize("name", READABLE)
def test_reads_every_fixture_exactly(name):
    rows = EXPECTED[name]
    assert read_rows(FIXTURES / f"{name}.parquet", list(rows[0])) == rows


def test_fixtures_cover_what_they_claim():
    names = set(EXPECTED)
    assert {"gsm8k_test", "plain_uncompressed", "snappy_dictionary", "page_v2", "gzip",
            "nulls", "row_groups", "plain_dictionary", "dictionary_fallback"} <= names
    assert any(row["maybe_text"] is None for row in EXPECTED["nulls"])
    assert any("日本語" in row["text"] for row in EXPECTED["plain_uncompressed"])
    assert all(path.stat().st_size < 30_000 for path in FIXTURES.glob("*.parquet"))
    assert any("," in row["answer"].rsplit("####", 1)[1] for row in EXPECTED["gsm8k_test"])


def test_a_subset_of_columns_in_any_order():
    rows = read_rows(FIXTURES / "nulls.parquet", ["maybe_int", "id"])
    assert rows == [{"maybe_int": r["maybe_int"], "id": r["id"]} for r in EXPECTED["nulls"]]


def test_flat_columns_beside_a_nested_one():
    assert read_rows(FIXTURES / "nested.parquet", ["id"]) == [{"id": i} for i in range(6)]
    with pytest.raises(ParquetError, match=r"column 'tags' is nested"):
        read_rows(FIXTURES / "nested.parquet", ["tags"])


def test_unsupported_parts_are_one_line():
    with pytest.raises(ParquetError, match=r"zstd\.parquet: column 'id' is compressed with "
                                           r"ZSTD; this reader takes uncompressed, SNAPPY"):
        read_rows(FIXTURES / "zstd.parquet", ["id"])
    with pytest.raises(ParquetError, match=r"no column 'nope' \(columns: id, small, text\)"):
        read_rows(FIXTURES / "gzip.parquet", ["nope"])
    with pytest.raises(ParquetError, match=r"cannot read"):
        read_rows(FIXTURES / "missing.parquet", ["id"])


# ---- snappy ------------------------------------------------------------------------------------


def test_snappy_literals_and_overlapping_copies():
    # "ab", then a copy of 8 bytes from 2 back (overlapping: repeats "ab"), then a literal.
    block = bytes([13, (2 - 1) << 2]) + b"ab" + bytes([((8 - 4) << 2) | 1, 2]) \
        + bytes([(3 - 1) << 2]) + b"xyz"
    assert snappy_codec.decompress(block, 13) == b"ababababab" + b"xyz"
    with pytest.raises(snappy_codec.SnappyError, match="says 13 bytes"):
        snappy_codec.decompress(block, 12)
    with pytest.raises(snappy_codec.SnappyError, match="outside the output"):
        snappy_codec.decompress(bytes([10, ((8 - 4) << 2) | 1, 2]), 10)  # copy before output
    with pytest.raises(snappy_codec.SnappyError, match="holds 2 bytes"):
        snappy_codec.decompress(bytes([5, 1 << 2]) + b"ab", 5)


# ---- hostile files -----------------------------------------------------------------------------
# A small compact-protocol writer: values are (type, value) pairs, structs {field id: pair}.

_TYPES = {"true": 1, "false": 2, "i32": 5, "i64": 6, "bin": 8, "list": 9, "map": 11,
          "struct": 12}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _zigzag(n: int) -> bytes:
    return _varint((n << 1) ^ (n >> 63))


def _value(kind: str, value) -> bytes:
    if kind in ("true", "false"):  # in a list: a byte each
        return bytes([1 if value else 2])
    if kind in ("i32", "i64"):
        return _zigzag(value)
    if kind == "bin":
        return _varint(len(value)) + value
    if kind == "struct":
        return _struct(value)
    if kind == "map":
        if not value:
            return b"\0"
        key_kind, value_kind = _typed(value[0][0])[0], _typed(value[0][1])[0]
        return _varint(len(value)) + bytes([(_TYPES[key_kind] << 4) | _TYPES[value_kind]]) + \
            b"".join(_value(*_typed(k)) + _value(*_typed(v)) for k, v in value)
    element, items = value  # "list": (element kind, [values])
    head = bytes([(len(items) << 4) | _TYPES[element]]) if len(items) < 15 else \
        bytes([0xF0 | _TYPES[element]]) + _varint(len(items))
    return head + b"".join(_value(element, item) for item in items)


def _struct(fields: dict) -> bytes:
    out, last = bytearray(), 0
    for field_id in sorted(fields):
        kind, value = fields[field_id]
        if 0 < field_id - last < 16:
            out.append(((field_id - last) << 4) | _TYPES[kind])
        else:  # the long form: the type alone, then the field id
            out += bytes([_TYPES[kind]]) + _zigzag(field_id)
        if kind not in ("true", "false"):  # a boolean field is all in its type
            out += _value(kind, value)
        last = field_id
    return bytes(out) + b"\0"


def _page(values: bytes, count: int, size: int | None = None, stored: int | None = None,
          encoding: int = 0) -> bytes:
    header = {1: ("i32", 0), 2: ("i32", len(values) if size is None else size),
              3: ("i32", len(values) if stored is None else stored),
              5: ("struct", {1: ("i32", count), 2: ("i32", encoding), 3: ("i32", 3),
                             4: ("i32", 3)})}
    return _struct(header) + values


def _file(pages: bytes, rows: int, *, optional: bool = False, codec: int = 0,
          offset: int = 4, chunk_size: int | None = None, column_fields=None) -> bytes:
    """One INT64 column "n" in one row group, its pages as given."""
    size = len(pages) if chunk_size is None else chunk_size
    column_meta = {1: ("i32", 2), 2: ("list", ("i32", [0])), 3: ("list", ("bin", [b"n"])),
                   4: ("i32", codec), 5: ("i64", rows), 6: ("i64", size), 7: ("i64", size),
                   9: ("i64", offset)}
    group = {1: ("list", ("struct", [{2: ("i64", offset), 3: ("struct", column_meta)}])),
             2: ("i64", size), 3: ("i64", rows)}
    schema = [{4: ("bin", b"schema"), 5: ("i32", 1)},
              {1: ("i32", 2), 3: ("i32", 1 if optional else 0), 4: ("bin", b"n"),
               **(column_fields or {})}]
    meta = _struct({1: ("i32", 1), 2: ("list", ("struct", schema)), 3: ("i64", rows),
                    4: ("list", ("struct", [group]))})
    return b"PAR1" + pages + meta + len(meta).to_bytes(4, "little") + b"PAR1"


def _int64s(*values: int) -> bytes:
    return b"".join(v.to_bytes(8, "little", signed=True) for v in values)


def _read(tmp_path: Path, data: bytes, columns=("n",)) -> list[dict]:
    path = tmp_path / "hostile.parquet"
    path.write_bytes(data)
    return read_rows(path, list(columns))


def _refused(tmp_path: Path, data: bytes, pattern: str) -> str:
    with pytest.raises(ParquetError, match=pattern) as error:
        _read(tmp_path, data)
    assert "\n" not in str(error.value) and str(error.value).startswith(str(tmp_path))
    return str(error.value)


def test_the_hand_built_file_reads(tmp_path):
    assert _read(tmp_path, _file(_page(_int64s(5, -7, 2**40), 3), 3)) == \
        [{"n": 5}, {"n": -7}, {"n": 2**40}]
    # Optional, all null: one RLE run claiming 2^31 nulls yields only the rows there are.
    levels = _varint(2**31 << 1) + b"\0"
    page = _page(len(levels).to_bytes(4, "little") + levels, 4)
    assert _read(tmp_path, _file(page, 4, optional=True)) == [{"n": None}] * 4


def test_wrong_magic_truncation_and_empty_files(tmp_path):
    good = _file(_page(_int64s(1, 2), 2), 2)
    _refused(tmp_path, b"", "no PAR1 magic")
    _refused(tmp_path, b"PAR1", "no PAR1 magic")
    _refused(tmp_path, b"PAR2" + good[4:], "no PAR1 magic")
    for cut in range(0, len(good) - 1, 7):
        _refused(tmp_path, good[:cut], "not a readable Parquet file")
    huge_footer = good[:-8] + (2**32 - 1).to_bytes(4, "little") + b"PAR1"
    _refused(tmp_path, huge_footer, "footer length 4,294,967,295 is longer than the file")


def test_absurd_lengths_are_refused_without_allocating(tmp_path):
    values = _int64s(1, 2)
    _refused(tmp_path, _file(_page(values, 2), 10**12), "claims 1,000,000,000,000 rows")
    _refused(tmp_path, _file(_page(values, 2), MAX_ROWS + 1), "at most 1,000,000 are read")
    _refused(tmp_path, _file(_page(values, 2, size=10**6), 2, codec=1),
             "claims 1,000,000 bytes, more than its codec can expand to")
    _refused(tmp_path, _file(_page(values, 2, size=2**30), 2, codec=2), "invalid size")
    _refused(tmp_path, _file(_page(values, 2, stored=2**30), 2), "invalid size")
    _refused(tmp_path, _file(_page(values, 3), 2), "more values than rows")
    _refused(tmp_path, _file(_page(values, 2), 2, offset=10**9), "lies outside the file")
    _refused(tmp_path, _file(_page(values, 2), 2, chunk_size=10**9), "lies outside the file")
    _refused(tmp_path, _file(_page(_int64s(1), 2), 2), "fewer values than it says")
    _refused(tmp_path, _file(_page(values, 1), 2), r"ends after 1 of 2 values")
    # A dictionary index with no dictionary, and a snappy page whose block lies.
    _refused(tmp_path, _file(_page(b"\x01\x02\x00", 2, encoding=8), 2),
             "uses a dictionary it does not have")
    _refused(tmp_path, _file(_page(bytes([99]) + b"x" * 20, 2, size=16), 2, codec=1),
             "snappy block says 99 bytes, the page 16")


def test_thrift_lists_and_nesting_that_lie(tmp_path):
    def with_footer(footer: bytes) -> bytes:
        return b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1"

    # FileMetaData: version 1, then a schema list of 2^28 structs in a few bytes.
    lying_list = b"\x15\x02" + b"\x19\xfc" + _varint(2**28) + b"\0" * 8
    _refused(tmp_path, with_footer(lying_list), "a length of 268,435,456 runs past the end")
    deep = b"\x1c" * 100 + b"\0" * 101  # field 1, a struct, holding field 1, a struct...
    _refused(tmp_path, with_footer(deep), "nested too deeply")


def test_thrift_values_of_the_wrong_type_are_refused_in_one_line(tmp_path):
    def with_footer(footer: bytes) -> bytes:
        return b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1"

    # Field 1 a map of one entry, struct -> binary: a key that is no dict key.
    _refused(tmp_path, with_footer(bytes.fromhex("1B01C8000000")),
             r"not a readable Parquet file \(a map key holds a struct or a map\)")
    # The same with a list of one struct as the key.
    _refused(tmp_path, with_footer(bytes.fromhex("1B01981C000000")),
             r"not a readable Parquet file \(a map key holds a struct or a map\)")
    # A schema list holding a list instead of structs.
    _refused(tmp_path, with_footer(bytes.fromhex("1502191905000000")),
             "not a readable Parquet file")


def test_a_converted_type_of_the_wrong_type_reads_as_no_annotation(tmp_path):
    values = _page(_int64s(5, -7), 2)
    for converted in [("list", ("i32", [11])), ("bin", b"UINT_8"), ("struct", {})]:
        assert _read(tmp_path, _file(values, 2, column_fields={6: converted})) == \
            [{"n": 5}, {"n": -7}]


class _Map(list):
    """(key, value) pairs to write as a Thrift map."""


def _typed(value) -> tuple[str, object]:
    """A plain value (as CompactReader reads it: a struct is a dict) as a (type, value) pair."""
    if isinstance(value, bool):
        return ("true" if value else "false"), value
    if isinstance(value, int):
        return "i64", value
    if isinstance(value, bytes):
        return "bin", value
    if isinstance(value, _Map):
        return "map", value
    if isinstance(value, list):
        kind = _typed(value[0])[0] if value else "i32"
        kind = "true" if kind == "false" else kind
        return "list", (kind, [_typed(item)[1] for item in value])
    return "struct", {field_id: _typed(item) for field_id, item in value.items()}


def _footer_of(data: bytes) -> tuple[dict, int]:
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    return CompactReader(data, start, len(data) - 8).read_struct(), start


def _paths(value, path=()):
    """Where every field of a footer sits: a path of field ids and list indices. (A list's
    elements share one type: a whole list is replaced, never one element.)"""
    if isinstance(value, dict):
        for field_id, item in value.items():
            yield (*path, field_id)
            yield from _paths(item, (*path, field_id))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replaced(meta: dict, path: tuple, value) -> dict:
    meta = copy.deepcopy(meta)
    holder = meta
    for key in path[:-1]:
        holder = holder[key]
    holder[path[-1]] = value
    return meta


# What a writer bug or an attacker could put in any field instead: every kind of Thrift value,
# including a map whose key is a struct (a dict Python cannot use as a key).
_OTHER_VALUES = [7, True, b"x", [7], [b"x"], [{}], {}, {1: 7}, _Map([(1, 2)]),
                 _Map([({}, b"")])]


@pytest.mark.parametrize("name", ["gsm8k_test", "nulls"])
def test_every_footer_field_holding_another_type_is_one_line(tmp_path, name):
    data = (FIXTURES / f"{name}.parquet").read_bytes()
    meta, start = _footer_of(data)
    columns = list(EXPECTED[name][0])

    def with_footer(footer_meta: dict) -> bytes:
        footer = _struct(_typed(footer_meta)[1])
        return data[:start] + footer + len(footer).to_bytes(4, "little") + b"PAR1"

    assert _read(tmp_path, with_footer(meta), columns) == EXPECTED[name]  # written faithfully
    for path in _paths(meta):
        for value in _OTHER_VALUES:
            try:
                _read(tmp_path, with_footer(_replaced(meta, path, value)), columns)
            except ParquetError as exc:
                assert "\n" not in str(exc)


def test_random_damage_is_always_one_line(tmp_path):
    rng = random.Random(15)
    for name in ("gsm8k_test", "page_v2", "gzip", "snappy_dictionary"):
        data = (FIXTURES / f"{name}.parquet").read_bytes()
        columns = list(EXPECTED[name][0])
        for _ in range(60):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 3)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            try:
                _read(tmp_path, bytes(damaged), columns)
            except ParquetError as exc:
                assert "\n" not in str(exc)
