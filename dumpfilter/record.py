"""The subset of ``dataclasses`` this package uses (``@dataclass``, ``@dataclass(frozen=True)``,
``field(default_factory=...)``, ``fields``, ``asdict``), without importing ``dataclasses``.

Why: a capture kernel pays for every import. ``dataclasses`` pulls in ``inspect`` (and with it ``ast``,
``dis``, ``tokenize``) and compiles several functions per class; on the capture path that was ~12 ms of
a 0.3 s dump. Here a class gets a generic ``__init__`` (fields in annotation order, defaults from the
class body or a ``field(default_factory=...)``), ``__repr__``, ``__eq__`` and, when frozen, a hash and
read-only attributes: what the stdlib decorator gives these plain records. Type checkers see a
dataclass (``dataclass_transform``).
"""
from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False  # typing itself is not imported at run time either
if TYPE_CHECKING:
    from typing import Any, dataclass_transform
else:

    def dataclass_transform(**_kw: Any) -> Callable[[Any], Any]:
        return lambda f: f


class _Field:
    __slots__ = ("name", "default_factory")

    def __init__(self, default_factory: Callable[[], Any] | None = None) -> None:
        self.name = ""
        self.default_factory = default_factory


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is made by ``default_factory()`` for each instance."""
    return _Field(default_factory)


_MISSING = object()


def _build(cls: type, frozen: bool) -> type:
    names = tuple(cls.__dict__.get("__annotations__", {}))
    defaults: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    for name in names:
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field) and value.default_factory is not None:
            factories[name] = value.default_factory
            delattr(cls, name)
        elif value is not _MISSING:
            defaults[name] = value
    count = len(names)
    set_attr = object.__setattr__
    qual = cls.__name__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > count:
            raise TypeError(f"{qual}() takes {count} positional arguments but {len(args)} were given")
        for name, value in zip(names, args):
            set_attr(self, name, value)
        for name in names[len(args) :]:
            if name in kwargs:
                set_attr(self, name, kwargs.pop(name))
            elif name in factories:
                set_attr(self, name, factories[name]())
            elif name in defaults:
                set_attr(self, name, defaults[name])
            else:
                raise TypeError(f"{qual}() missing required argument: {name!r}")
        if kwargs:
            raise TypeError(f"{qual}() got an unexpected keyword argument {next(iter(kwargs))!r}")

    def __repr__(self: Any) -> str:
        return f"{qual}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    setattr(cls, "__init__", __init__)
    setattr(cls, "__repr__", __repr__)
    setattr(cls, "__eq__", __eq__)
    setattr(cls, "__record_fields__", names)
    if frozen:

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise AttributeError(f"cannot assign to field {name!r} of a frozen {qual}")

        def __delattr__(self: Any, name: str) -> None:
            raise AttributeError(f"cannot delete field {name!r} of a frozen {qual}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in names))

        setattr(cls, "__setattr__", __setattr__)
        setattr(cls, "__delattr__", __delattr__)
        setattr(cls, "__hash__", __hash__)
    else:
        setattr(cls, "__hash__", None)  # mutable and compared by value: unhashable
    return cls


@dataclass_transform(field_specifiers=(field,))
def dataclass(cls: type | None = None, *, frozen: bool = False) -> Any:
    """``@dataclass`` or ``@dataclass(frozen=True)``."""
    if cls is None:
        return lambda c: _build(c, frozen)
    return _build(cls, frozen)


class _FieldInfo:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def fields(obj: Any) -> tuple[_FieldInfo, ...]:
    """The fields of a record class or instance, in order (objects with a ``name``)."""
    return tuple(_FieldInfo(n) for n in obj.__record_fields__)


def asdict(obj: Any) -> dict[str, Any]:
    """Field name → value; dict and list values are copied (one level, as the records hold no records)."""
    out: dict[str, Any] = {}
    for n in obj.__record_fields__:
        v = getattr(obj, n)
        out[n] = v.copy() if isinstance(v, (dict, list)) else v
    return out
