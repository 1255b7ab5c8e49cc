"""Rows as PostgreSQL's binary COPY data, made a column at a time (``tasks._copy_rows``).

A batch's rows are mostly alike: the tasks of one ``add_tasks`` call share their executor,
times, status and often their context. So each column's distinct values are dumped once, with
psycopg's own binary dumpers, and a column that every row has alike is dumped once for all
rows: a row of such a batch costs its id and little else. The columns that vary are sent
first, the alike ones after them, so that every row ends with the same bytes.
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
    """Rows given a list of values per column (of the PostgreSQL ``types``) as binary COPY
    data, for the COPY of the columns ``order`` names (their indexes): those that vary,
    then those alike in every row; ``connection`` (psycopg's) gives the dumpers."""

    def __init__(self, connection: Any, types: Sequence[str],
                 columns: Sequence[Sequence[Any]]) -> None:
        alike = [is_alike(kind, values) for kind, values in zip(types, columns, strict=True)]
        self.order = ([i for i, same in enumerate(alike) if not same]
                      + [i for i, same in enumerate(alike) if same])
        self._transformer = Transformer(connection)
        self._oids = connection.adapters.types
        self._count = len(columns[0])
        self._varying = [(types[i], columns[i]) for i, same in enumerate(alike) if not same]
        self._head = struct.pack(">h", len(types))
        self._suffix = b"".join(self._fields(types[i], columns[i][:1])[0]
                                for i, same in enumerate(alike) if same)

    def data(self, start: int = 0, stop: int | None = None) -> bytes:
        """Rows ``start`` to ``stop`` (without the signature and the trailer)."""
        stop = self._count if stop is None else min(stop, self._count)
        fields = [self._column(kind, values[start:stop]) for kind, values in self._varying]
        rows = zip(itertools.repeat(self._head, stop - start), *fields,
                   itertools.repeat(self._suffix))
        return b"".join(itertools.chain.from_iterable(rows))

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
