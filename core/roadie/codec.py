"""Context maps in msgpack with a type registry: plugin classes round-trip, nothing is pickled.

Plain data (None, bool, int, float, str, bytes, list, dict) is stored as msgpack. Any other
value must belong to a registered type: it is stored as a msgpack extension carrying
``[key, version, data]``, where ``key`` is ``"<plugin distribution>:<TypeName>"`` and ``data``
is what the type's encoder made of the value (itself encoded the same way). Decoding looks the
key up in the registry, never imports anything by a name found in the data, and only resolves
keys of the namespaces it is allowed (the task's plugins and ``roadie``).

Limits: an encoding larger than ``max_size`` is refused; typed values nest at most
``max_depth`` deep inside one another (plain lists and maps are bounded by msgpack's own nesting
limit); decoding first checks that the bytes are complete, so a forged length never makes it
allocate more than the data could hold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import json
import pathlib
import struct
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from roadie.errors import ContextDecodeError, ContextEncodeError, TypeRegistrationError

EXT_CODE = 42
DATETIME_CODE = 43  # the compact form of the commonest typed value (see _pack_datetime)
CORE_NAMESPACE = "roadie"
DEFAULT_MAX_SIZE = 4 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64
# how deeply msgpack nests plain lists and maps within one packb call (its C packer's limit)
_PLAIN_NEST_LIMIT = 1024
# bytes that are decoded without checking their lengths first: at most ~100 KB of allocation
_UNCHECKED_SIZE = 256
EMPTY_MAP = b"\x80"  # {} encoded: the commonest context, decoded without the type machinery


def _ext(code: int, payload: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, payload)`` without its argument checks, for arguments known
    to be right: a quarter of the cost (0.3 us, not 1.2), and every datetime of a status
    message is one."""
    return tuple.__new__(msgpack.ExtType, (code, payload))


Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]
Upgrader = Callable[[Any], Any]
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class RegisteredType:
    """One entry of the registry: a class under a namespaced key and version."""

    key: str
    cls: type
    version: int
    encode: Encoder
    decode: Decoder
    upgraders: Mapping[int, Upgrader] = field(default_factory=dict)

    @functools.cached_property
    def namespace(self) -> str:
        """The plugin distribution that owns the key."""
        return self.key.partition(":")[0]

    def upgrade(self, data: Any, stored_version: int) -> Any:
        """Bring ``data`` stored by ``stored_version`` up to the current version."""
        for version in range(stored_version, self.version):
            upgrader = self.upgraders.get(version)
            if upgrader is None:
                raise ContextDecodeError(
                    f"type {self.key!r} has no upgrader from version {version} to {version + 1}; "
                    f"the stored value cannot be read by this version of the plugin"
                )
            try:
                data = upgrader(data)
            except ContextDecodeError:
                raise
            except Exception as exc:
                raise ContextDecodeError(
                    f"the upgrader of type {self.key!r} from version {version} to {version + 1} "
                    f"failed on the stored value: {exc}"
                ) from None
        return data


def context_type(
    cls: T | None = None,
    *,
    name: str | None = None,
    version: int = 1,
    upgraders: Mapping[int, Upgrader] | None = None,
) -> Any:
    """Mark a dataclass (or a class with ``__roadie_encode__``/``__roadie_decode__``) as a
    context type, with its name and version, for ``register(cls)`` in the
    ``roadie_register_types`` hook. Usable bare (``@context_type``) or with arguments.
    """

    def mark(target: T) -> T:
        target.__roadie_type__ = {  # type: ignore[attr-defined]
            "name": name or target.__qualname__,
            "version": version,
            "upgraders": dict(upgraders or {}),
        }
        return target

    return mark(cls) if cls is not None else mark


def _codec_for_class(cls: type) -> tuple[Encoder, Decoder]:
    """The encoder and decoder that a class offers by its shape."""
    encode = getattr(cls, "__roadie_encode__", None)
    decode = getattr(cls, "__roadie_decode__", None)
    if encode is not None and decode is not None:
        return encode, decode
    if issubclass(cls, enum.Flag):
        # combined flags (A | B) have no member name of their own: store the value
        flags = cls
        return (lambda member: member.value), (lambda value: flags(value))
    if issubclass(cls, enum.Enum):
        members = cls
        return (lambda member: member.name), (lambda name: members[name])
    if dataclasses.is_dataclass(cls):
        fields = [f.name for f in dataclasses.fields(cls) if f.init]

        def encode_dataclass(obj: Any) -> dict[str, Any]:
            return {name: getattr(obj, name) for name in fields}

        def decode_dataclass(data: Any) -> Any:
            return cls(**data)

        return encode_dataclass, decode_dataclass
    raise TypeRegistrationError(
        f"cannot register {cls.__qualname__}: it is not a dataclass or an Enum and has no "
        f"__roadie_encode__/__roadie_decode__ methods; pass encode= and decode= functions"
    )


class _Encoding:
    """The state of one encode: the namespaces of the typed values met and how deeply they
    nest (counted as decode counts them). A method, not a closure: a closure that passes
    itself to the nested packb is a reference cycle, left for the garbage collector."""

    __slots__ = ("by_class", "depth", "max_depth", "used")

    def __init__(self, by_class: dict[type, RegisteredType], max_depth: int) -> None:
        self.by_class = by_class
        self.max_depth = max_depth
        self.depth = 0
        self.used: set[str] = set()

    def default(self, obj: Any) -> msgpack.ExtType:
        if type(obj) is dt.datetime:
            packed = _pack_datetime(obj)
            if packed is not None:
                return _ext(DATETIME_CODE, packed)
        entry = self.by_class.get(type(obj))
        if entry is None:
            raise ContextEncodeError(_unregistered(obj))
        self.used.add(entry.namespace)
        if self.depth >= self.max_depth:
            raise ContextEncodeError(_too_deep(self.max_depth))
        self.depth += 1
        try:
            payload = msgpack.packb(
                [entry.key, entry.version, entry.encode(obj)],
                default=self.default, strict_types=True, use_bin_type=True,
            )
        finally:
            self.depth -= 1
        return msgpack.ExtType(EXT_CODE, payload)

class _Decoding:
    """The state of one decode: how deeply typed values nest. A method, not a closure: a
    closure that passes itself to the nested unpack is a reference cycle, left for the
    garbage collector (a worker decodes two maps per task)."""

    __slots__ = ("allowed", "depth", "installed", "registry", "what")

    def __init__(self, registry: TypeRegistry, what: str, allowed: set[str] | None,
                 installed: Callable[[str], bool] | None) -> None:
        self.registry = registry
        self.what = what
        self.allowed = allowed
        self.installed = installed
        self.depth = 0

    def ext_hook(self, code: int, payload: bytes) -> Any:
        if code == DATETIME_CODE:
            return _unpack_datetime(payload)
        what, registry = self.what, self.registry
        if code != EXT_CODE:
            raise ContextDecodeError(f"{what}: unknown msgpack extension code {code}")
        self.depth += 1
        if self.depth > registry.max_depth:
            raise ContextDecodeError(f"{what}: {_too_deep(registry.max_depth)}")
        try:
            header = _unpack(payload, self.ext_hook)
            if not (isinstance(header, list) and len(header) == 3):
                raise ContextDecodeError(f"{what}: malformed typed value")
            key, version, inner = header
            if not (isinstance(key, str) and type(version) is int and version >= 1):
                raise ContextDecodeError(f"{what}: malformed typed value")
            return registry._decode_typed(key, version, inner, what, self.allowed,
                                          self.installed)
        finally:
            self.depth -= 1


class TypeRegistry:
    """Maps namespaced type keys to codecs; encodes and decodes context maps.

    ``encode`` and ``decode`` are safe to call from many threads at once.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH):
        self.max_size = max_size
        self.max_depth = max_depth
        self._by_key: dict[str, RegisteredType] = {}
        self._by_class: dict[type, RegisteredType] = {}
        _register_builtins(self)

    # -- registration -------------------------------------------------------------------

    def register(
        self,
        cls: type,
        *,
        namespace: str,
        name: str | None = None,
        version: int | None = None,
        encode: Encoder | None = None,
        decode: Decoder | None = None,
        upgraders: Mapping[int, Upgrader] | None = None,
    ) -> RegisteredType:
        """Register ``cls`` under ``"<namespace>:<name>"``.

        Without ``encode``/``decode`` the class must be a dataclass, an Enum, or offer
        ``__roadie_encode__(self)`` and a classmethod ``__roadie_decode__(data)``. Options set
        with ``@context_type`` are used unless given here.
        """
        if not isinstance(cls, type):
            raise TypeRegistrationError(
                f"register() needs a class, not {type(cls).__name__} {cls!r}"
            )
        # only the class's own marks: a subclass of a @context_type class is another type
        marked = cls.__dict__.get("__roadie_type__") or {}
        name = name or marked.get("name") or cls.__qualname__
        version = version if version is not None else marked.get("version", 1)
        upgraders = upgraders if upgraders is not None else marked.get("upgraders", {})
        for label, part in (("namespace", namespace), ("name", name)):
            if not isinstance(part, str) or not part or ":" in part:
                raise TypeRegistrationError(
                    f"cannot register {_qualname(cls)}: its {label} {part!r} must be a "
                    f"non-empty string without ':'"
                )
        if type(version) is not int or version < 1:
            raise TypeRegistrationError(f"type {name!r}: version must be an int >= 1")
        if (encode is None) != (decode is None):
            raise TypeRegistrationError(f"type {name!r}: give both encode= and decode=, or neither")
        if not all(callable(f) for f in (encode, decode) if f is not None):
            raise TypeRegistrationError(f"type {name!r}: encode= and decode= must be callables")
        for old, upgrader in dict(upgraders or {}).items():
            if type(old) is not int or not 1 <= old < version or not callable(upgrader):
                raise TypeRegistrationError(
                    f"type {name!r} version {version}: upgraders must map a version from 1 to "
                    f"{version - 1} to a function that upgrades its data by one version"
                )
        if encode is None or decode is None:
            encode, decode = _codec_for_class(cls)
        key = f"{namespace}:{name}"
        entry = RegisteredType(key, cls, version, encode, decode, dict(upgraders or {}))
        existing = self._by_key.get(key)
        if existing is not None:
            if existing.cls is cls:
                return existing
            raise TypeRegistrationError(
                f"type key {key!r} is registered twice: by {_qualname(existing.cls)} and by "
                f"{_qualname(cls)}; give one of them another name"
            )
        other = self._by_class.get(cls)
        if other is not None:
            raise TypeRegistrationError(
                f"{_qualname(cls)} is already registered as {other.key!r}; cannot also be {key!r}"
            )
        self._by_key[key] = entry
        self._by_class[cls] = entry
        return entry

    def registrar(self, namespace: str) -> Callable[..., RegisteredType]:
        """A ``register`` callback bound to one plugin's namespace (given to the hook)."""

        def register(cls: type, **options: Any) -> RegisteredType:
            return self.register(cls, namespace=namespace, **options)

        return register

    def unregister_namespace(self, namespace: str) -> None:
        """Forget every type of one namespace (used when a plugin is unregistered)."""
        for key in [k for k, v in self._by_key.items() if v.namespace == namespace]:
            entry = self._by_key.pop(key)
            self._by_class.pop(entry.cls, None)

    def get(self, key: str) -> RegisteredType | None:
        """The registered type of ``key``, or None."""
        return self._by_key.get(key)

    def keys(self, namespace: str | None = None) -> list[str]:
        """The registered keys, of one namespace or all."""
        return sorted(k for k, v in self._by_key.items() if namespace in (None, v.namespace))

    # -- encoding ------------------------------------------------------------------------

    def encode(self, value: Any, *, what: str = "context", max_size: int | None = None) -> bytes:
        """Encode ``value``; a value that cannot be encoded raises ``ContextEncodeError``
        naming its key path (``context["rows"][3]["when"]``)."""
        return self.encode_with_namespaces(value, what=what, max_size=max_size)[0]

    def check(self, value: Any, *, what: str = "context") -> None:
        """Raise what ``encode`` raises for ``value``, if anything; a flat map of plain values
        that certainly fits (``plain_map_fits``: a status message) is not encoded to know."""
        if type(value) is dict and plain_map_fits(value, self.max_size):
            return
        self.encode(value, what=what)

    def encode_with_namespaces(
        self, value: Any, *, what: str = "context", max_size: int | None = None
    ) -> tuple[bytes, set[str]]:
        """Encode ``value`` and say which plugin namespaces its types came from."""
        encoding = _Encoding(self._by_class, self.max_depth)
        try:
            data = msgpack.packb(value, default=encoding.default, strict_types=True,
                                 use_bin_type=True)
        except Exception as exc:  # an encoder may raise anything: report it with its key path
            raise ContextEncodeError(self._explain_failure(value, what, exc)) from None
        limit = self.max_size if max_size is None else max_size
        if len(data) > limit:
            raise ContextEncodeError(
                f"{what} encodes to {len(data):,} bytes, over the limit of {limit:,}; keep large "
                f"data in attachments or storage and pass a reference"
            )
        used = encoding.used
        used.discard(CORE_NAMESPACE)
        return data, used

    def _explain_failure(self, value: Any, what: str, exc: Exception) -> str:
        try:
            found = self._find_unencodable(value, what)
        except RecursionError:
            found = None
        if found is not None:
            path, reason = found
            return f"cannot encode {path}: {reason}"
        return f"cannot encode {what}: {exc}"

    def _find_unencodable(self, value: Any, what: str) -> tuple[str, str] | None:
        """The key path of the first value that cannot be encoded, and why (slow; errors only).

        Walks like the encoder: ``typed`` counts the typed values around a value (at most
        ``max_depth``), ``plain`` its lists and maps within the innermost one (msgpack's limit).
        """
        stack: list[tuple[Any, str, int, int]] = [(value, what, 0, 0)]
        while stack:
            item, path, typed, plain = stack.pop()
            if plain > _PLAIN_NEST_LIMIT:
                return path, f"lists and maps nested deeper than {_PLAIN_NEST_LIMIT} levels"
            kind = type(item)
            if kind is str and not _is_utf8(item):
                return path, (f"the string {_short(item)} holds lone surrogates, which UTF-8 "
                              f"cannot store; decode the bytes it came from properly")
            if item is None or kind in (bool, int, float, str, bytes, bytearray, memoryview):
                continue
            children: list[tuple[Any, str, int, int]] = []
            if kind is list:
                children = [(v, f"{path}[{i}]", typed, plain + 1) for i, v in enumerate(item)]
            elif kind is dict:
                for key, v in item.items():
                    children.append((key, f"{path} key {key!r}", typed, plain + 1))
                    children.append((v, f"{path}[{_subscript(key)}]", typed, plain + 1))
            else:
                entry = self._by_class.get(kind)
                if entry is None:
                    return path, _unregistered(item)
                if typed + 1 > self.max_depth:
                    return path, _too_deep(self.max_depth)
                try:
                    data = entry.encode(item)
                except Exception as exc:
                    return path, f"the encoder of {entry.key!r} failed: {_describe(exc)}"
                # the data sits in a [key, version, data] list: one plain level
                children = [(data, f"{path}<{entry.key}>", typed + 1, 1)]
            stack.extend(reversed(children))
        return None

    # -- decoding ------------------------------------------------------------------------

    def decode(
        self,
        data: bytes,
        *,
        what: str = "context",
        namespaces: Iterable[str] | None = None,
        installed: Callable[[str], bool] | None = None,
    ) -> Any:
        """Decode bytes made by ``encode``.

        ``namespaces`` limits which plugins' types resolve (the task's import context);
        ``installed`` tells whether a plugin distribution is installed, for clearer errors.
        Any problem raises ``ContextDecodeError``, never another exception.
        """
        if data == EMPTY_MAP:
            return {}
        allowed = None if namespaces is None else {*namespaces, CORE_NAMESPACE}
        decoding = _Decoding(self, what, allowed, installed)
        try:
            return _unpack(data, decoding.ext_hook)
        except ContextDecodeError:
            raise
        except Exception as exc:  # any failure of corrupt data is a decode error
            raise ContextDecodeError(f"{what} is not valid roadie data: {exc}") from None

    def _decode_typed(
        self,
        key: str,
        version: int,
        inner: Any,
        what: str,
        allowed: set[str] | None,
        installed: Callable[[str], bool] | None,
    ) -> Any:
        namespace, _, type_name = key.partition(":")
        if allowed is not None and namespace not in allowed:
            raise ContextDecodeError(
                f"{what} holds a value of type {key!r} from plugin {namespace!r}, which the task "
                f"does not name among its plugins"
            )
        entry = self._by_key.get(key)
        if entry is None:
            if installed is not None and not _safely(installed, namespace):
                raise ContextDecodeError(
                    f"{what} needs type {type_name!r} from plugin {namespace!r}, which is not "
                    f"installed here; install {namespace!r} (pip install {namespace}) and resume "
                    f"the task"
                )
            raise ContextDecodeError(
                f"{what} needs type {type_name!r}, which plugin {namespace!r} does not register "
                f"(any more); install a version of {namespace!r} that registers it"
            )
        if version > entry.version:
            raise ContextDecodeError(
                f"{what} holds {key!r} version {version}, newer than version {entry.version} "
                f"registered here; upgrade plugin {namespace!r}"
            )
        if version < entry.version:
            try:
                inner = entry.upgrade(inner, version)
            except ContextDecodeError as exc:
                raise ContextDecodeError(f"{what}: {exc}") from None
        try:
            return entry.decode(inner)
        except ContextDecodeError:
            raise
        except Exception as exc:
            raise ContextDecodeError(
                f"{what}: the decoder of {key!r} failed on the stored value: {exc}"
            ) from None


_DATETIME = struct.Struct(">HBBBBBIBB")  # y, mo, d, h, mi, s, us, fold, zone kind
_NAIVE, _UTC, _ZONE = 0, 1, 2


def _pack_datetime(value: dt.datetime) -> bytes | None:
    """A naive, UTC or ZoneInfo datetime in 13 bytes plus its zone key (others: None, and
    the registered ``roadie:datetime`` codec encodes them)."""
    tz = value.tzinfo
    if tz is None:
        kind, key = _NAIVE, b""
    elif tz is dt.timezone.utc:
        kind, key = _UTC, b""
    elif type(tz) is zoneinfo.ZoneInfo and tz.key:
        kind, key = _ZONE, tz.key.encode()
    else:
        return None
    return _DATETIME.pack(value.year, value.month, value.day, value.hour, value.minute,
                          value.second, value.microsecond, value.fold, kind) + key


def _unpack_datetime(payload: bytes) -> dt.datetime:
    year, month, day, hour, minute, second, micro, fold, kind = _DATETIME.unpack_from(payload)
    rest = payload[_DATETIME.size:]
    if kind == _NAIVE and not rest:
        tz: dt.tzinfo | None = None
    elif kind == _UTC and not rest:
        tz = dt.timezone.utc
    elif kind == _ZONE and rest:
        tz = zoneinfo.ZoneInfo(rest.decode())
    else:
        raise ValueError("malformed datetime")
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=tz, fold=fold)


def _unpack(data: bytes, ext_hook: Callable[[int, bytes], Any]) -> Any:
    # msgpack allocates a list as long as its header says before it reads the items, so
    # headers nested in n bytes can claim about n * n / 5 pointers. Above a small size, first
    # check (skipping builds nothing) that every length fits in the data.
    if len(data) > _UNCHECKED_SIZE:
        checker = msgpack.Unpacker(max_buffer_size=len(data))
        checker.feed(data)
        checker.skip()
        if checker.tell() != len(data):
            raise ValueError(f"{len(data) - checker.tell()} bytes of extra data after the value")
    return msgpack.unpackb(
        data, ext_hook=ext_hook, raw=False, strict_map_key=False, use_list=True
    )


_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 64 - 1  # what msgpack can store


def plain_map_fits(value: dict[str, Any], max_size: int) -> bool:
    """Whether a flat map certainly encodes within ``max_size`` bytes, known without encoding
    it: str keys; values None, bool, float, int within msgpack's range or ASCII str (a status
    message from ``task.progress``). False means: encode it to know."""
    size = 5
    for key, item in value.items():
        if type(key) is not str or not key.isascii():
            return False
        kind = type(item)
        if kind is str:
            if not item.isascii():
                return False
            size += len(item)
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif not (item is None or kind is float or kind is bool):
            return False
        size += len(key) + 14  # (each key's and value's header, a number's bytes: at most)
    return size <= max_size


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _subscript(key: Any) -> str:
    """A map key as written in a key path: ``"rows"`` for strings (as in the docs), else repr."""
    return json.dumps(key, ensure_ascii=False) if type(key) is str else repr(key)


def _safely(installed: Callable[[str], bool], namespace: str) -> bool:
    try:
        return bool(installed(namespace))
    except Exception:
        return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _too_deep(max_depth: int) -> str:
    return (
        f"typed values (tuples, sets, dates, registered classes, ...) nested more than "
        f"{max_depth} levels deep inside one another"
    )


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _unregistered(obj: Any) -> str:
    kind = type(obj)
    return (
        f"{_qualname(kind)} is not a registered context type; register it in your plugin's "
        f"roadie_register_types hook (register({kind.__qualname__})), or pass plain data"
    )


# -- the built-in types -------------------------------------------------------------------


def _encode_tz(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, zoneinfo.ZoneInfo):
        if tz.key is None:
            raise TypeError(
                f"time zone {tz!r} was loaded from a file and has no key; use "
                f"zoneinfo.ZoneInfo('Area/City')"
            )
        return ["zone", tz.key]
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        default_name = dt.timezone(offset).tzname(None)
        name = tz.tzname(None)
        micros = offset // dt.timedelta(microseconds=1)
        return ["fixed", micros, None if name == default_name else name]
    raise TypeError(
        f"time zone {tz!r} is neither a zoneinfo.ZoneInfo nor a datetime.timezone; convert it"
    )


def _decode_tz(data: Any) -> dt.tzinfo | None:
    if data is None:
        return None
    kind = data[0]
    if kind == "zone":
        return zoneinfo.ZoneInfo(data[1])
    if kind == "fixed":
        offset = dt.timedelta(microseconds=data[1])
        return dt.timezone(offset, data[2]) if data[2] is not None else dt.timezone(offset)
    raise ValueError(f"unknown time zone kind {kind!r}")


def _encode_datetime(v: dt.datetime) -> list[Any]:
    return [
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold,
        _encode_tz(v.tzinfo),
    ]


def _decode_datetime(d: list[Any]) -> dt.datetime:
    year, month, day, hour, minute, second, micro, fold, tz = d
    return dt.datetime(year, month, day, hour, minute, second, micro, fold=fold,
                       tzinfo=_decode_tz(tz))


def _encode_time(v: dt.time) -> list[Any]:
    return [v.hour, v.minute, v.second, v.microsecond, v.fold, _encode_tz(v.tzinfo)]


def _decode_time(d: list[Any]) -> dt.time:
    hour, minute, second, micro, fold, tz = d
    return dt.time(hour, minute, second, micro, fold=fold, tzinfo=_decode_tz(tz))


def _encode_int(v: int) -> bytes:
    # ints beyond 64 bits: two's complement bytes (str() refuses more than 4300 digits)
    return v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True)


def _decode_int(d: Any) -> int:
    if type(d) is not bytes:
        raise TypeError(f"expected bytes, not {type(d).__name__}")
    return int.from_bytes(d, "big", signed=True)


def _encode_path(v: pathlib.PurePath) -> str | bytes:
    text = str(v)
    # a file name that is not valid UTF-8 comes with lone surrogates: keep them, as bytes
    return text if _is_utf8(text) else text.encode("utf-8", "surrogatepass")


def _path_decoder(cls: type[pathlib.PurePath]) -> Decoder:
    def decode(d: Any) -> pathlib.PurePath:
        if type(d) is bytes:
            d = d.decode("utf-8", "surrogatepass")
        if type(d) is not str:
            raise TypeError(f"expected str or bytes, not {type(d).__name__}")
        return cls(d)

    return decode


def _register_builtins(registry: TypeRegistry) -> None:
    def add(cls: type, name: str, encode: Encoder, decode: Decoder) -> None:
        registry.register(cls, namespace=CORE_NAMESPACE, name=name, encode=encode, decode=decode)

    add(dt.datetime, "datetime", _encode_datetime, _decode_datetime)
    add(dt.date, "date", lambda v: [v.year, v.month, v.day], lambda d: dt.date(*d))
    add(dt.time, "time", _encode_time, _decode_time)
    add(dt.timedelta, "timedelta", lambda v: [v.days, v.seconds, v.microseconds],
        lambda d: dt.timedelta(days=d[0], seconds=d[1], microseconds=d[2]))
    add(decimal.Decimal, "decimal", str, decimal.Decimal)
    add(uuid.UUID, "uuid", lambda v: v.bytes, lambda d: uuid.UUID(bytes=d))
    add(tuple, "tuple", list, tuple)
    add(set, "set", list, set)
    add(frozenset, "frozenset", list, frozenset)
    # bytearray and memoryview need no entry: msgpack stores them as bytes itself
    add(int, "int", _encode_int, _decode_int)
    for path_class in (pathlib.PurePosixPath, pathlib.PureWindowsPath,
                       pathlib.PosixPath, pathlib.WindowsPath):
        add(path_class, path_class.__name__, _encode_path, _path_decoder(path_class))
