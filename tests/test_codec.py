"""The type registry: round trips, registration, versions, import contexts, limits, fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import gc
import math
import pathlib
import random
import struct
import sys
import threading
import tracemalloc
import types
import uuid
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import roadie
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from roadie.codec import DATETIME_CODE, EXT_CODE, TypeRegistry, context_type, plain_map_fits
from roadie.errors import ContextDecodeError, ContextEncodeError, TypeRegistrationError
from roadie.testing import make_app
from roadie_examples.types import Batch

NS = "acme-shipping"
PROPERTY = settings(max_examples=250, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


# -- plugin-like types registered by the tests -------------------------------------------------


class Color(enum.Enum):
    RED = "r"
    GREEN = "g"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2
    EXEC = 4


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int
    label: str = ""


@context_type(name="Crate", version=1)
@dataclasses.dataclass
class Crate:
    """A dataclass that holds other values, typed ones included."""

    items: list[Any]
    tags: Any = None


class Money:
    """Registered through ``__roadie_encode__``/``__roadie_decode__``."""

    def __init__(self, amount: decimal.Decimal, currency: str) -> None:
        self.amount, self.currency = amount, currency

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Money) and self.currency == other.currency
                and self.amount.compare_total(other.amount) == 0)

    def __hash__(self) -> int:
        return hash((self.amount, self.currency))

    def __roadie_encode__(self) -> list[Any]:
        return [str(self.amount), self.currency]

    @classmethod
    def __roadie_decode__(cls, data: list[Any]) -> Money:
        return cls(decimal.Decimal(data[0]), data[1])


class Span:
    """Registered with an explicit pair of functions."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Span) and (self.start, self.end) == (other.start, other.end)

    __hash__ = None  # type: ignore[assignment]


def new_registry(**limits: Any) -> TypeRegistry:
    registry = TypeRegistry(**limits)
    register = registry.registrar(NS)
    for cls in (Color, Level, Perm, Point, Crate, Money):
        register(cls)
    register(Span, encode=lambda s: [s.start, s.end], decode=lambda d: Span(*d))
    return registry


REGISTRY = new_registry()


def roundtrip(value: Any, registry: TypeRegistry = REGISTRY) -> Any:
    return registry.decode(registry.encode(value))


# -- exact comparison: equal values, equal types, all the way down -----------------------------


def short(value: Any, width: int = 60) -> str:
    """repr, cut short (and safe for ints too long to print)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits somewhere inside
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= width else text[: width - 3] + "..."


def assert_same(a: Any, b: Any, path: str = "value") -> None:
    assert type(a) is type(b), f"{path}: {type(a).__name__} became {type(b).__name__}"
    kind = type(a)
    if kind is float:
        # bit for bit: NaN stays NaN (with its payload), -0.0 stays negative
        assert struct.pack(">d", a) == struct.pack(">d", b), f"{path}: {short(a)} != {short(b)}"
    elif kind is decimal.Decimal:
        assert a.compare_total(b) == 0, f"{path}: {short(a)} != {short(b)}"
    elif kind in (list, tuple):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif kind is dict:
        assert len(a) == len(b), f"{path}: {len(a)} keys != {len(b)}"
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items(), strict=True)):
            assert_same(ka, kb, f"{path} key #{i}")
            assert_same(va, vb, f"{path}[{short(ka)}]")
    elif kind in (set, frozenset):
        assert a == b, f"{path}: {short(a)} != {short(b)}"
        decoded = {y: y for y in b}  # look up b's own element equal to each of a's
        for x in a:
            assert_same(x, decoded[x], f"{path}{{{short(x)}}}")
    elif kind in (dt.datetime, dt.time):
        assert_same_tz(a.tzinfo, b.tzinfo, path)
        assert a.replace(tzinfo=None) == b.replace(tzinfo=None), f"{path}: {short(a)} != {short(b)}"
        assert a.fold == b.fold, f"{path}: fold {a.fold} != {b.fold}"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, enum.Enum):
        assert a is b, f"{path}: {short(a)} is not {short(b)}"
    else:
        assert a == b, f"{path}: {short(a)} != {short(b)}"


def assert_same_tz(a: dt.tzinfo | None, b: dt.tzinfo | None, path: str) -> None:
    assert type(a) is type(b), f"{path}: time zone {short(a)} became {short(b)}"
    if isinstance(a, zoneinfo.ZoneInfo):
        # ZoneInfo("Area/City") is cached: decoding gives back the very same object
        assert a is b, f"{path}: {short(a)} is not {short(b)}"
    elif isinstance(a, dt.timezone):
        assert a == b and a.tzname(None) == b.tzname(None), f"{path}: {short(a)} != {short(b)}"


# -- strategies --------------------------------------------------------------------------------

offsets = st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59),
                        max_value=dt.timedelta(hours=23, minutes=59))
fixed_zones = st.one_of(
    st.builds(dt.timezone, offsets),
    st.builds(dt.timezone, offsets, st.text(min_size=1, max_size=8)),
    st.just(dt.timezone.utc),
)
zones = st.one_of(st.none(), fixed_zones, st.timezones())
folds = st.integers(0, 1)
datetimes = st.builds(lambda d, fold: d.replace(fold=fold), st.datetimes(timezones=zones), folds)
times = st.builds(lambda t, fold: t.replace(fold=fold), st.times(timezones=zones), folds)
big_ints = st.one_of(
    st.integers(min_value=2**64, max_value=2**400),
    st.integers(min_value=-(2**400), max_value=-(2**63) - 1),
    st.sampled_from([2**64, 2**64 - 1, -(2**63), -(2**63) - 1]),
)  # ints of more than 4300 digits (which str() refuses) are tested one by one below
floats = st.floats(allow_nan=True, allow_infinity=True)
paths = st.builds(lambda cls, parts: cls(*parts),
                  st.sampled_from([pathlib.PurePosixPath, pathlib.PureWindowsPath,
                                   pathlib.PosixPath]),
                  st.lists(st.text(st.characters(blacklist_characters="/\\\x00"),
                                   min_size=1, max_size=5), max_size=4))

# values that can be map keys and set members (hashable; NaN left out: NaN != NaN)
hashable_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), big_ints, st.floats(allow_nan=False),
    st.text(max_size=10), st.binary(max_size=10), st.uuids(), st.dates(), datetimes, times,
    st.timedeltas(), st.decimals(allow_nan=False), paths,
    st.sampled_from(list(Color) + list(Level) + [Perm.READ, Perm.READ | Perm.WRITE, Perm(0)]),
    st.builds(Point, st.integers(), st.integers(), st.text(max_size=5)),
)
hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=2).map(tuple),
                            st.frozensets(inner, max_size=2)),
    max_leaves=3,
)
scalars = st.one_of(
    hashable_scalars, floats, st.decimals(allow_nan=True, allow_infinity=True),
    st.builds(Money, st.decimals(allow_nan=False, allow_infinity=False, places=2),
              st.sampled_from(["EUR", "USD"])),
    st.builds(Span, st.integers(), st.integers()),
)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.dictionaries(hashables, inner, max_size=3),  # non-string keys
        st.lists(inner, max_size=3).map(tuple),
        st.sets(hashables, max_size=3),
        st.frozensets(hashables, max_size=3),
        st.builds(Crate, st.lists(inner, max_size=2), inner),
    )


values = st.recursive(scalars, containers, max_leaves=12)
contexts = st.dictionaries(st.text(max_size=8), values, max_size=4)


# -- round trips -------------------------------------------------------------------------------


@PROPERTY
@given(contexts)
def test_every_supported_value_round_trips_exactly(context: dict[str, Any]) -> None:
    assert_same(context, roundtrip(context))


@PROPERTY
@given(st.lists(values, min_size=1, max_size=3), st.dictionaries(hashables, values, max_size=3))
def test_values_nested_in_lists_and_maps_round_trip(items: list[Any],
                                                     keyed: dict[Any, Any]) -> None:
    nested = {"rows": [{"item": item, "keyed": keyed} for item in items], "keyed": keyed}
    assert_same(nested, roundtrip(nested))


@pytest.mark.parametrize("value", [
    dt.datetime(2024, 3, 31, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("America/New_York")),
    dt.datetime(2024, 1, 1, 12, 0, 0, 1),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")),
    dt.datetime.min, dt.datetime.max.replace(tzinfo=dt.timezone.utc),
    dt.date(1, 1, 1), dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(-dt.timedelta(hours=3))),
    dt.timedelta(days=-3, microseconds=7), dt.timedelta.max,
    decimal.Decimal("-0"), decimal.Decimal("1.500"), decimal.Decimal("sNaN"),
    decimal.Decimal("-Infinity"), decimal.Decimal("1E+999999"),
    uuid.UUID(int=0), uuid.UUID("86ca30c9-e6d5-4c95-83b8-2e08a1c4f00d"),
    b"\x00\xff", (), (1, (2, (3,))), set(), frozenset({(1, 2), frozenset({3})}),
    pathlib.PurePosixPath("/a/b"), pathlib.PureWindowsPath(r"C:\x\y"), pathlib.Path("rel/p"),
    2**64, -(2**63) - 1, 10**5000, -(7**9000),
    float("nan"), float("-inf"), -0.0,
    Color.GREEN, Level.HIGH, Perm.READ | Perm.EXEC, Perm(0),
    {1: "one", (1, 2): "pair", None: "none", b"k": "bytes", Color.RED: "enum",
     frozenset({1}): "set", Point(1, 2): "point", dt.date(2024, 1, 1): "date"},
], ids=lambda v: short(v, 40))
def test_builtin_and_registered_values_round_trip(value: Any) -> None:
    assert_same(value, roundtrip(value))
    nested = {"nested": [value, {"again": value}]}
    assert_same(nested, roundtrip(nested))


def test_bytearray_and_memoryview_are_stored_as_bytes() -> None:
    # msgpack writes them as bin data itself, before the registry is asked
    assert_same({"a": b"xy", "b": b"z"}, roundtrip({"a": bytearray(b"xy"), "b": memoryview(b"z")}))


def test_registered_types_decode_as_their_classes() -> None:
    crate = Crate([Point(1, 2), Money(decimal.Decimal("9.99"), "EUR"), Span(3, 4)], tags={"x"})
    back = roundtrip({"crate": crate})["crate"]
    assert type(back) is Crate
    assert back == crate
    assert [type(i) for i in back.items] == [Point, Money, Span]
    assert REGISTRY.get(f"{NS}:Crate") is not None
    assert REGISTRY.get(f"{NS}:Point").version == 1  # type: ignore[union-attr]
    assert {f"{NS}:Money", f"{NS}:Span"} <= set(REGISTRY.keys(NS))
    assert "roadie:datetime" in REGISTRY.keys("roadie")


def test_encode_reports_the_namespaces_used() -> None:
    _, used = REGISTRY.encode_with_namespaces(
        {"p": [Point(1, 2)], "when": dt.date.today(), "n": 1}
    )
    assert used == {NS}
    assert REGISTRY.encode_with_namespaces({"when": dt.date.today()})[1] == set()



def test_encoding_leaves_no_garbage_cycles() -> None:
    # add_tasks encodes two maps per task: cycles would wake the garbage collector often.
    # Less than one collected object per 10 encodings: none of them are the encoder's (a
    # thread of the test runner, pytest-xdist's, may leave a few meanwhile).
    gc.collect()
    gc.disable()
    try:
        for n in range(1000):
            REGISTRY.encode_with_namespaces({"p": [Point(n, 2)], "when": dt.date.today()})
            REGISTRY.encode({})
        assert gc.collect() < 100
    finally:
        gc.enable()


def test_decoding_leaves_no_garbage_cycles() -> None:
    # a worker decodes two maps per attempt (context and captured state); as above, less
    # than one collected object per 10 decodings (the test runner's thread may leave a few)
    data = REGISTRY.encode({"p": [Point(1, 2)], "when": dt.datetime.now(dt.timezone.utc)})
    gc.collect()
    gc.disable()
    try:
        for _ in range(1000):
            REGISTRY.decode(data, namespaces=[NS])
            REGISTRY.decode(REGISTRY.encode({}))
        assert gc.collect() < 100
    finally:
        gc.enable()


@pytest.mark.parametrize("message", [
    {"done": 1, "total": 3, "message": "step 1"}, {"done": 0.5}, {"ok": True, "none": None},
    {"big": 2 ** 64 - 1}, {"small": -(2 ** 63)},
])
def test_a_plain_map_fits_exactly_when_it_encodes(message: dict[str, Any]) -> None:
    assert plain_map_fits(message, 1024)
    assert len(REGISTRY.encode(message)) <= 1024


@pytest.mark.parametrize("message", [
    {"too big": 2 ** 64}, {"when": dt.date.today()}, {"list": [1]}, {"accent": "é"},
    {"surrogate": "\ud800"}, {1: "int key"}, {"long": "x" * 2000},
])
def test_anything_else_is_left_to_the_encoder(message: dict[str, Any]) -> None:
    assert not plain_map_fits(message, 1024)


def test_the_wire_format_is_an_ext_type_carrying_key_version_and_data() -> None:
    data = REGISTRY.encode(Point(3, 4, "p"))
    ext = msgpack.unpackb(data)
    assert isinstance(ext, msgpack.ExtType) and ext.code == EXT_CODE
    assert msgpack.unpackb(ext.data) == [f"{NS}:Point", 1, {"x": 3, "y": 4, "label": "p"}]


def test_datetimes_have_a_compact_wire_form() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    for value in (dt.datetime(2026, 3, 29, 2, 30), dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                  dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=paris)):
        ext = msgpack.unpackb(REGISTRY.encode(value))
        assert ext.code == DATETIME_CODE and len(ext.data) <= 13 + len("Europe/Paris")
        back = REGISTRY.decode(REGISTRY.encode(value))
        assert (back, back.tzinfo, back.fold) == (value, value.tzinfo, value.fold)
    offset = dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2), "X"))
    ext = msgpack.unpackb(REGISTRY.encode(offset))
    assert ext.code == EXT_CODE  # other time zones take the registered roadie:datetime codec
    assert REGISTRY.decode(REGISTRY.encode(offset)).tzinfo == offset.tzinfo


# -- encoding errors ---------------------------------------------------------------------------


class Unregistered:
    pass


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[roadie.Roadie]:
    app = make_app(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "data")
    yield app
    app.close()


def test_an_unregistered_object_fails_at_add_task_naming_its_key_path(
    sqlite_app: roadie.Roadie,
) -> None:
    rows = [{"when": dt.datetime.now(dt.timezone.utc)} for _ in range(3)]
    rows.append({"when": Unregistered()})
    with pytest.raises(roadie.ContextEncodeError) as caught:
        sqlite_app.add_task("roadie-examples:echo", {"rows": rows})
    message = str(caught.value)
    assert 'context["rows"][3]["when"]' in message
    assert "test_codec.Unregistered is not a registered context type" in message
    assert "roadie_register_types" in message
    assert sqlite_app.list_tasks() == []


def test_an_unregistered_object_inside_a_typed_value_is_located() -> None:
    with pytest.raises(ContextEncodeError) as caught:
        REGISTRY.encode({"crate": Crate([1, (2, Unregistered())])})
    assert f'context["crate"]<{NS}:Crate>["items"][1]<roadie:tuple>[1]' in str(caught.value)


def test_an_unregistered_map_key_is_located() -> None:
    unregistered = Unregistered()
    with pytest.raises(ContextEncodeError) as caught:
        REGISTRY.encode({"m": {unregistered: 1}})
    assert f'context["m"] key {unregistered!r}' in str(caught.value)


def test_subclasses_of_plain_types_are_not_silently_converted() -> None:
    class Names(dict):  # type: ignore[type-arg]
        pass

    with pytest.raises(ContextEncodeError, match=r'context\["n"\]: .*Names is not a registered'):
        REGISTRY.encode({"n": Names(a=1)})


def test_a_failing_encoder_is_reported_with_its_key_path() -> None:
    registry = TypeRegistry()

    class Broken:
        pass

    def explode(_: Any) -> Any:
        raise KeyError("missing part")

    registry.register(Broken, namespace=NS, name="Broken", encode=explode,
                      decode=lambda d: Broken())
    with pytest.raises(ContextEncodeError) as caught:
        registry.encode({"a": [Broken()]})
    assert f"cannot encode context[\"a\"][0]: the encoder of '{NS}:Broken' failed" in str(
        caught.value)
    assert "missing part" in str(caught.value)


def test_a_time_zone_that_cannot_be_stored_is_refused_when_encoding() -> None:
    class Odd(dt.tzinfo):
        def utcoffset(self, _: Any) -> dt.timedelta:
            return dt.timedelta(0)

    with pytest.raises(ContextEncodeError, match=r'context\["at"\]: .*neither a zoneinfo'):
        REGISTRY.encode({"at": dt.datetime(2024, 1, 1, tzinfo=Odd())})


def test_context_keys_must_be_strings_at_add_task(sqlite_app: roadie.Roadie) -> None:
    with pytest.raises(roadie.ContextEncodeError, match="context keys must be strings"):
        sqlite_app.add_task("roadie-examples:echo", {1: "x"})


def test_plugin_types_in_a_context_join_the_tasks_import_context(sqlite_app: roadie.Roadie) -> None:
    @roadie.hookimpl
    def roadie_register_types(register: Callable[..., Any]) -> None:
        register(Point)

    plugin = types.SimpleNamespace(roadie_register_types=roadie_register_types)
    sqlite_app.plugins.register(plugin, name=NS, is_global=False)
    task = sqlite_app.add_task("roadie-examples:echo", {"p": Point(1, 2), "b": Batch(0, 5)})
    assert set(task.plugins) == {"roadie-examples", NS}
    assert_same({"p": Point(1, 2), "b": Batch(0, 5)}, sqlite_app.get_task(task.id).context)


# -- registration ------------------------------------------------------------------------------


def test_registering_one_key_for_two_classes_names_both() -> None:
    registry = TypeRegistry()
    registry.register(Point, namespace=NS)
    other = dataclasses.make_dataclass("Point", [("z", int)])
    with pytest.raises(TypeRegistrationError) as caught:
        registry.register(other, namespace=NS)
    message = str(caught.value)
    assert f"'{NS}:Point' is registered twice" in message
    assert "test_codec.Point" in message and "types.Point" in message
    # the same class again is harmless; another namespace is another key
    assert registry.register(Point, namespace=NS) is registry.get(f"{NS}:Point")
    registry.register(other, namespace="other-plugin")


def test_one_class_cannot_have_two_keys() -> None:
    registry = TypeRegistry()
    registry.register(Point, namespace=NS)
    with pytest.raises(TypeRegistrationError, match=f"already registered as '{NS}:Point'"):
        registry.register(Point, namespace=NS, name="Point2")


@pytest.mark.parametrize(("cls", "options", "message"), [
    (Unregistered, {}, "not a dataclass or an Enum and has no __roadie_encode__"),
    (Point(1, 2), {}, "register\\(\\) needs a class, not Point"),
    (42, {}, "needs a class, not int"),
    (Span, {"encode": list}, "give both encode= and decode=, or neither"),
    (Span, {"encode": 1, "decode": 2}, "must be callables"),
    (Point, {"version": 0}, "version must be an int >= 1"),
    (Point, {"version": "2"}, "version must be an int >= 1"),
    (Point, {"name": "a:b"}, "must be a non-empty string without ':'"),
    (Point, {"version": 2, "upgraders": {2: lambda d: d}}, "upgraders must map a version"),
    (Point, {"version": 2, "upgraders": {1: "not callable"}}, "upgraders must map a version"),
])
def test_bad_registrations_are_refused(cls: Any, options: dict[str, Any], message: str) -> None:
    registry = TypeRegistry()
    with pytest.raises(TypeRegistrationError, match=message):
        registry.register(cls, namespace=NS, **options)
    assert registry.keys(NS) == []


def test_a_bad_namespace_is_refused() -> None:
    with pytest.raises(TypeRegistrationError, match="namespace"):
        TypeRegistry().register(Point, namespace="")


def test_a_subclass_does_not_inherit_the_context_type_name() -> None:
    @dataclasses.dataclass
    class BigCrate(Crate):
        size: int = 0

    registry = TypeRegistry()
    registry.register(Crate, namespace=NS)
    entry = registry.register(BigCrate, namespace=NS)
    assert entry.key.endswith("BigCrate")
    assert_same({"c": BigCrate([1], size=3)}, roundtrip({"c": BigCrate([1], size=3)}, registry))


def test_a_failing_registration_hook_marks_the_plugin_broken(sqlite_app: roadie.Roadie) -> None:
    @roadie.hookimpl
    def roadie_register_types(register: Callable[..., Any]) -> None:
        register(Unregistered)

    with pytest.raises(roadie.PluginError, match=f"plugin '{NS}': roadie_register_types failed"):
        sqlite_app.plugins.register(
            types.SimpleNamespace(roadie_register_types=roadie_register_types), name=NS)


# -- versions ----------------------------------------------------------------------------------


@dataclasses.dataclass
class ParcelV1:
    weight: int


@dataclasses.dataclass
class ParcelV2:
    grams: int


@dataclasses.dataclass
class ParcelV3:
    grams: int
    fragile: bool


def registry_with(cls: type, **options: Any) -> TypeRegistry:
    registry = TypeRegistry()
    registry.register(cls, namespace=NS, name="Parcel", **options)
    return registry


def test_a_value_stored_by_version_1_is_upgraded_through_the_chain() -> None:
    old = registry_with(ParcelV1).encode({"p": ParcelV1(weight=2)})
    v2 = registry_with(ParcelV2, version=2, upgraders={1: lambda d: {"grams": d["weight"] * 1000}})
    assert v2.decode(old) == {"p": ParcelV2(grams=2000)}
    v3 = registry_with(ParcelV3, version=3, upgraders={
        1: lambda d: {"grams": d["weight"] * 1000},
        2: lambda d: {**d, "fragile": False},
    })
    assert v3.decode(old) == {"p": ParcelV3(grams=2000, fragile=False)}
    assert v3.decode(v2.encode({"p": ParcelV2(5)})) == {"p": ParcelV3(5, False)}


def test_context_type_carries_version_and_upgraders() -> None:
    @context_type(name="Parcel", version=2, upgraders={1: lambda d: {"grams": d["weight"]}})
    @dataclasses.dataclass
    class Parcel:
        grams: int

    old = registry_with(ParcelV1).encode(ParcelV1(7))
    registry = TypeRegistry()
    assert registry.register(Parcel, namespace=NS).version == 2
    assert registry.decode(old) == Parcel(7)


def test_the_examples_plugin_upgrades_a_version_1_batch() -> None:
    registry = TypeRegistry()
    registry.registrar("roadie-examples")(Batch)
    v1 = msgpack.packb(msgpack.ExtType(EXT_CODE, msgpack.packb(
        ["roadie-examples:Batch", 1, {"start": 3, "size": 4}])))
    assert registry.decode(v1) == Batch(3, 4, "items")


def test_a_version_newer_than_installed_is_a_clear_error() -> None:
    newer = registry_with(ParcelV2, version=2, upgraders={1: lambda d: d}).encode([ParcelV2(1)])
    with pytest.raises(ContextDecodeError) as caught:
        registry_with(ParcelV1).decode(newer, what="context of task 7")
    message = str(caught.value)
    assert f"context of task 7 holds '{NS}:Parcel' version 2" in message
    assert "newer than version 1 registered here" in message
    assert f"upgrade plugin '{NS}'" in message


def test_a_missing_upgrader_is_a_clear_error() -> None:
    old = registry_with(ParcelV1).encode(ParcelV1(1))
    v3 = registry_with(ParcelV3, version=3, upgraders={2: lambda d: d})
    with pytest.raises(ContextDecodeError,
                       match=f"^context of task 2: type '{NS}:Parcel' has no upgrader from "
                             f"version 1 to 2"):
        v3.decode(old, what="context of task 2")


def test_a_failing_upgrader_is_a_clear_error() -> None:
    old = registry_with(ParcelV1).encode(ParcelV1(1))
    v2 = registry_with(ParcelV2, version=2, upgraders={1: lambda d: d["no such field"]})
    with pytest.raises(ContextDecodeError,
                       match=f"upgrader of type '{NS}:Parcel' from version 1 to 2 failed"):
        v2.decode(old)


def test_a_decoder_that_rejects_stored_data_is_a_decode_error() -> None:
    old = registry_with(ParcelV1).encode(ParcelV1(1))
    with pytest.raises(ContextDecodeError, match=f"the decoder of '{NS}:Parcel' failed"):
        registry_with(ParcelV2, version=1).decode(old)  # same version, other fields


# -- import contexts ---------------------------------------------------------------------------


def test_only_the_allowed_namespaces_and_builtins_resolve() -> None:
    data = REGISTRY.encode({"p": Point(1, 2), "when": dt.date(2024, 1, 1)})
    assert REGISTRY.decode(data, namespaces=[NS]) == {"p": Point(1, 2), "when": dt.date(2024, 1, 1)}
    assert REGISTRY.decode(REGISTRY.encode({"w": dt.date(2024, 1, 1)}), namespaces=[]) == {
        "w": dt.date(2024, 1, 1)}
    with pytest.raises(ContextDecodeError) as caught:
        REGISTRY.decode(data, what="context of task 3", namespaces=["roadie-examples"])
    message = str(caught.value)
    assert f"context of task 3 holds a value of type '{NS}:Point' from plugin '{NS}'" in message
    assert "does not name among its plugins" in message


def test_a_type_of_a_plugin_that_is_not_installed_is_a_clear_error() -> None:
    data = REGISTRY.encode({"p": Point(1, 2)})
    with pytest.raises(ContextDecodeError) as caught:
        TypeRegistry().decode(data, what="context of task 9", namespaces=[NS],
                              installed=lambda name: False)
    message = str(caught.value)
    assert f"context of task 9 needs type 'Point' from plugin '{NS}'" in message
    assert "not installed here" in message and f"pip install {NS}" in message


def test_a_type_that_the_plugin_no_longer_registers_is_a_clear_error() -> None:
    data = REGISTRY.encode({"p": Point(1, 2)})
    with pytest.raises(ContextDecodeError) as caught:
        TypeRegistry().decode(data, what="context of task 9", installed=lambda name: True)
    assert (f"context of task 9 needs type 'Point', which plugin '{NS}' does not register"
            in str(caught.value))


def test_a_broken_installed_check_still_gives_a_decode_error() -> None:
    def broken(name: str) -> bool:
        raise ValueError("no such distribution name")

    with pytest.raises(ContextDecodeError, match="needs type 'Point'"):
        TypeRegistry().decode(REGISTRY.encode(Point(1, 2)), installed=broken)


def test_a_task_whose_plugin_is_blocked_keeps_its_row_and_bytes(sqlite_app: roadie.Roadie,
                                                                tmp_path: Path) -> None:
    task = sqlite_app.add_task("roadie-examples:echo", {"batch": Batch(1, 2)})
    with roadie.Roadie(sqlite_app.url, blocked_plugins=["roadie-examples"],
                       data_dir=tmp_path / "data") as blocked:
        record = blocked.get_task(task.id)
        with pytest.raises(ContextDecodeError) as caught:
            record.context  # noqa: B018
        assert record.context_bytes == task.context_bytes
        assert [t.id for t in blocked.list_tasks()] == [task.id]
    message = str(caught.value)
    assert f"context of task {task.id}" in message
    assert "type 'Batch'" in message and "plugin 'roadie-examples'" in message
    assert_same({"batch": Batch(1, 2)}, sqlite_app.get_task(task.id).context)


# -- limits ------------------------------------------------------------------------------------


def test_the_size_limit_is_enforced_at_add_task(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'r.db'}", tmp_path / "data", max_context_size=1000)
    try:
        with pytest.raises(roadie.ContextEncodeError) as caught:
            app.add_task("roadie-examples:echo", {"blob": b"x" * 2000})
        assert "context encodes to 2,0" in str(caught.value)
        assert "over the limit of 1,000" in str(caught.value)
        assert app.list_tasks() == []
        assert app.add_task("roadie-examples:echo", {"blob": b"x" * 900}).id
    finally:
        app.close()


def test_encode_takes_a_size_limit_per_call() -> None:
    with pytest.raises(ContextEncodeError, match="status message encodes to"):
        REGISTRY.encode({"s": "x" * 100}, what="status message", max_size=50)


def nested_tuples(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = (value,)
    return value


def test_typed_values_nest_up_to_the_depth_limit() -> None:
    registry = new_registry(max_depth=5)
    assert_same({"t": nested_tuples(5)}, roundtrip({"t": nested_tuples(5)}, registry))
    with pytest.raises(ContextEncodeError) as caught:
        registry.encode({"t": nested_tuples(6)})
    message = str(caught.value)
    assert 'context["t"]' + "<roadie:tuple>[0]" * 5 + ":" in message
    assert "nested more than 5 levels deep" in message


def test_a_self_nesting_encoder_hits_the_depth_limit() -> None:
    registry = TypeRegistry()

    class Loop:
        pass

    registry.register(Loop, namespace=NS, encode=lambda v: v, decode=lambda d: d)
    with pytest.raises(ContextEncodeError, match="nested more than 64 levels"):
        registry.encode({"loop": Loop()})


def test_deeply_nested_values_never_escape_as_recursion_errors() -> None:
    with pytest.raises(ContextEncodeError, match="nested more than 64 levels"):
        REGISTRY.encode({"t": nested_tuples(5000)})
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ContextEncodeError, match="lists and maps nested deeper than"):
        REGISTRY.encode({"l": deep})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ContextEncodeError, match=r'context\["c"\](\[0\])+: lists and maps'):
        REGISTRY.encode({"c": cycle})


def forged_ext(key: str, version: Any, data: Any) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_CODE, msgpack.packb([key, version, data], use_bin_type=True))


def test_decoding_refuses_typed_values_nested_deeper_than_the_limit() -> None:
    value: Any = 1
    for _ in range(65):
        value = forged_ext("roadie:tuple", 1, [value])
    with pytest.raises(ContextDecodeError, match="nested more than 64 levels"):
        REGISTRY.decode(msgpack.packb(value))
    assert REGISTRY.decode(REGISTRY.encode(nested_tuples(64))) == nested_tuples(64)


@pytest.mark.parametrize("forged", [
    b"\xdd\xff\xff\xff\xff",  # an array of 4 G items
    b"\xdf\xff\xff\xff\xff",  # a map of 4 G pairs
    b"\xdb\xff\xff\xff\xff" + b"x" * 10,  # a 4 GB string
    b"\xc6\xff\xff\xff\xff" + b"x" * 10,  # 4 GB of bytes
    b"\xc9\xff\xff\xff\xff\x2a" + b"x" * 10,  # a 4 GB extension
    b"\xdd\x00\x00\xc3\x50" * 10_000,  # arrays of 50,000 items, nested 10,000 deep
    b"\x91" * 2_000 + b"\x01",  # nested too deep for msgpack
], ids=["array", "map", "str", "bin", "ext", "nested-arrays", "deep"])
def test_forged_lengths_never_allocate_unbounded_memory(forged: bytes) -> None:
    peak = peak_memory_of_refused_decode(forged)
    assert peak < 2_000_000 + 10 * len(forged), f"decoding {len(forged)} bytes used {peak:,}"


def peak_memory_of_refused_decode(forged: bytes) -> int:
    """Decode bytes that must be refused; return the peak memory the attempt allocated."""
    tracemalloc.start()
    try:
        with pytest.raises(ContextDecodeError, match="not valid roadie data"):
            REGISTRY.decode(forged)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("headers", [10, 50, 1_000])
def test_a_forged_length_inside_a_typed_value_is_refused(headers: int) -> None:
    """Arrays claiming a million items each, nested inside a typed value's payload."""
    payload = b"\x93" + msgpack.packb("roadie:tuple") + b"\x01" + b"\xdd\x00\x0f\x42\x40" * headers
    forged = msgpack.packb([1, {"x": msgpack.ExtType(EXT_CODE, payload)}])
    peak = peak_memory_of_refused_decode(forged)
    assert peak < 2_000_000, f"decoding {len(forged)} bytes used {peak:,}"


def test_encoding_from_many_threads_at_once_keeps_each_calls_namespaces() -> None:
    registry = new_registry()
    registry.registrar("other-plugin")(ParcelV1)
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(200):
            value, expected = (({"p": Point(i, 1)}, {NS}) if i % 2 else
                               ({"p": [ParcelV1(i)], "d": dt.date.today()}, {"other-plugin"}))
            _, used = registry.encode_with_namespaces(value)
            if used != expected:
                errors.append(f"thread {i}: {used} != {expected}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []


def test_an_encoder_may_itself_encode() -> None:
    registry = new_registry()

    class Sealed:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    registry.register(Sealed, namespace="sealing", name="Sealed",
                      encode=lambda s: registry.encode(s.inner),
                      decode=lambda d: Sealed(registry.decode(d)))
    data, used = registry.encode_with_namespaces({"s": Sealed([Point(1, 2)]), "p": Point(3, 4)})
    assert used == {"sealing", NS}
    back = registry.decode(data)
    assert back["s"].inner == [Point(1, 2)] and back["p"] == Point(3, 4)


# -- fuzzing: only ContextDecodeError, nothing imported ----------------------------------------


def decode_only_fails_cleanly(data: bytes) -> None:
    before = set(sys.modules)
    with contextlib.suppress(ContextDecodeError):  # anything else fails the test
        REGISTRY.decode(data, what="fuzzed context", namespaces=[NS])
    # zoneinfo reads zones from the tzdata package when it is installed (the docs extra brings
    # it): its subpackages hold zone files, not code.
    imported = {m for m in set(sys.modules) - before if not m.startswith("tzdata.")}
    assert imported == set(), f"decoding imported {imported}"


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        elif op == 2:
            del buf[at:at + rng.randint(1, 5)]
        elif op == 3:
            buf = buf[:at]
        else:  # a length-bearing header byte
            buf[at:at] = bytes([rng.choice([0xdc, 0xdd, 0xde, 0xdf, 0xc4, 0xc6, 0xc7, 0xc9, 0xd9,
                                            0xdb, 0xd4, 0xd8])]) + b"\xff\xff"
    return bytes(buf)


def mutate_ext_payloads(value: Any, rng: random.Random) -> Any:
    """The same structure with some of its typed values' payloads mutated (and re-wrapped)."""
    if isinstance(value, msgpack.ExtType) and value.code != DATETIME_CODE:
        inner = msgpack.unpackb(value.data, strict_map_key=False)
        inner = mutate_ext_payloads(inner, rng)
        payload = msgpack.packb(inner, use_bin_type=True)
        if rng.random() < 0.5:
            payload = mutate(payload, rng)
        return msgpack.ExtType(rng.choice([value.code] * 5 + [0, 7, 127]), payload)
    if isinstance(value, msgpack.ExtType):  # a compact datetime: its bytes are not msgpack
        payload = mutate(value.data, rng) if rng.random() < 0.5 else value.data
        return msgpack.ExtType(rng.choice([value.code] * 5 + [EXT_CODE, 7]), payload)
    if isinstance(value, list):
        return [mutate_ext_payloads(v, rng) for v in value]
    if isinstance(value, dict):
        return {k: mutate_ext_payloads(v, rng) for k, v in value.items()}
    return value


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    decode_only_fails_cleanly(data)


@FUZZ
@given(contexts, st.randoms(use_true_random=False))
def test_fuzz_mutated_encodings(context: dict[str, Any], rng: random.Random) -> None:
    valid = REGISTRY.encode(context)
    decode_only_fails_cleanly(mutate(valid, rng))
    raw = msgpack.unpackb(valid, strict_map_key=False)
    decode_only_fails_cleanly(msgpack.packb(mutate_ext_payloads(raw, rng), use_bin_type=True))


junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
              st.text(max_size=20), st.binary(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=5) | st.integers(-99, 99), inner,
                                            max_size=4)),
    max_leaves=10,
)


@FUZZ
@given(st.sampled_from(sorted(REGISTRY.keys())) | st.text(max_size=20) | st.sampled_from(
    ["os:system", "builtins:eval", "importlib:import_module", "roadie:", ":x", "acme:Point"]),
    st.one_of(st.integers(-2, 3), st.booleans(), st.just(2**40), st.text(max_size=3)), junk)
def test_fuzz_forged_typed_values(key: str, version: Any, data: Any) -> None:
    """Typed values with any key, version and data: each decoder meets shapes it never made."""
    decode_only_fails_cleanly(msgpack.packb(forged_ext(key, version, data)))
    decode_only_fails_cleanly(msgpack.packb({"x": [forged_ext(key, version, [data])]}))


def test_fuzz_seeded_mutations_of_every_builtin() -> None:
    rng = random.Random(4)
    samples = [
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
        dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2), "X")), dt.date(2024, 5, 6),
        dt.timedelta(seconds=5), decimal.Decimal("1.25"), uuid.UUID(int=5), (1, "a"), {1, 2},
        frozenset({"x"}), pathlib.PurePosixPath("/p"), 2**100, Color.RED, Perm.READ,
        Point(1, 2), Crate([Money(decimal.Decimal("1.00"), "EUR")]), Span(1, 2),
    ]
    for sample in samples:
        valid = REGISTRY.encode({"v": sample, "l": [sample]})
        for _ in range(150):
            decode_only_fails_cleanly(mutate(valid, rng))


def test_decode_errors_are_value_errors_too() -> None:
    # callers that already catch ValueError keep working
    with pytest.raises(ValueError):
        REGISTRY.decode(b"\xc1")
    assert math.isnan(REGISTRY.decode(REGISTRY.encode(float("nan"))))
