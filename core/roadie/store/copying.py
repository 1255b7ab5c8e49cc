"""Rows as PostgreSQL's binary COPY data, made a column at a time (``tasks._copy_rows``).

A batch's rows are mostly alike: the tasks of one ``add_tasks`` call share their executor,
times, status and often their context. So each column's distinct values are dumped once, with
psycopg's own binary dumpers, and a column that every row has alike is dumped once for all
rows (with the alike columns beside it, one piece): a row of such a batch costs its id and
little else.
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Sequence
from typing import Any

from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

# the binary COPY format (PostgreSQL's COPY documentation): a signature, flags and the
# header extension's length; each row its field count, then each field its length (-1:
# NULL) and its bytes; -1 as the field count ends the data
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
_INTEGERS = {"int2": struct.Struct(">ih"), "int4": struct.Struct(">ii"),
             "int8": struct.Struct(">iq")}


def is_alike(kind: str, values: Sequence[Any]) -> bool:
    """Whether every one of ``values`` (of the PostgreSQL type ``kind``) dumps as the first.
    Equal values of one column dump alike, but for 0.0 and -0.0."""
    first = values[0]
    return values.count(first) == len(values) and (kind != "float8" or first != 0)


class BinaryRows:
    """Rows as binary COPY data for the columns of the PostgreSQL ``types`` (in the COPY's
    order), given a list of values per column; ``connection`` (psycopg's) gives the
    dumpers."""

    def __init__(self, connection: Any, types: Sequence[str]) -> None:
        self._types = types
        self._transformer = Transformer(connection)
        self._oids = connection.adapters.types
        self._head = struct.pack(">h", len(types))

    def data(self, columns: Sequence[Sequence[Any]]) -> bytes:
        """The rows (without the signature and the trailer): a column that every row has
        alike is dumped once, as one piece with the alike columns next to it."""
        count = len(columns[0])
        pieces: list[Any] = []  # per row: a field (bytes) alike in every row, or a list
        alike: list[bytes] = [self._head]
        for kind, values in zip(self._types, columns, strict=True):
            if is_alike(kind, values):
                alike.append(self._fields(kind, values[:1])[0])
                continue
            if alike:
                pieces.append(itertools.repeat(b"".join(alike), count))
                alike = []
            pieces.append(self._column(kind, values))
        if alike:
            pieces.append(itertools.repeat(b"".join(alike), count))
        return b"".join(itertools.chain.from_iterable(zip(*pieces, strict=True)))

    def _column(self, kind: str, values: Sequence[Any]) -> list[bytes]:
        """The fields of ``values``: integers packed, the rest dumped once per distinct value
        (floats each: 0.0 and -0.0 are equal)."""
        packing = _INTEGERS.get(kind)
        if packing is not None and None not in values:
            return list(map(functools.partial(packing.pack, packing.size - 4), values))
        if kind == "float8":
            return self._fields(kind, values)
        distinct = list(dict.fromkeys(values))
        fields = dict(zip(distinct, self._fields(kind, distinct), strict=True))
        return list(map(fields.__getitem__, values))

    def _fields(self, kind: str, values: Sequence[Any]) -> list[bytes]:
        """``values`` as binary COPY fields, each its length then its bytes (or -1: NULL)."""
        transformer = self._transformer
        transformer.set_dumper_types([self._oids.get_oid(kind)] * len(values),
                                     pq.Format.BINARY)
        dumped = transformer.dump_sequence(values, [PyFormat.BINARY] * len(values))
        return [_NULL if data is None else struct.pack(">i", len(data)) + bytes(data)
                for data in dumped]
