"""The JSON form of a typed result, derived once from its dataclass fields, so that writing and reading cannot drift.

A dataclass gets ``to_json`` / ``from_json`` by inheriting :class:`JsonForm` (or by calling :func:`to_json` /
:func:`from_json`). Each field is written under its name, in field order, and read back by its type hint:

- a nested dataclass is written through its own ``to_json`` and read through its ``from_json``;
- a tuple or list is written as a list and read back as the hinted container (elements converted by their hint);
- a dict is written key by key (values converted) and read back as a dict;
- ``X | None``: None stays None, anything else is read as X; every other value (numbers, strings, ``Any``) is
  copied as stored, without coercion (a stored ``null`` for a float stays None).

The few fields whose JSON form is special say so in their metadata,
``dataclasses.field(metadata=json_meta(...))`` (:func:`json_meta`):

- ``key``: another key (``"sparsezoo_report"``), or a path into a nested object (``("gini_subsample", "every")``:
  fields with the same first key share one nested object, created where the first of them stands);
- ``omit_none``: the key is left out when the value is None, and a missing key reads as the field's default;
- ``codec``: a :class:`Codec` that writes any number of keys at the field's place and reads the value back from the
  whole object (e.g. ``(NearZero, fraction)`` pairs stored as keys ``near_zero_frac(abs,tau=0.01)``).

A key that is missing on reading raises ``KeyError`` unless the field has a default; keys that no field reads are
ignored. ``from_json(to_json(x)) == x`` for every value these rules can represent.

Example::

    >>> @dataclass(frozen=True)
    ... class Hist(JsonForm):
    ...     edges: tuple[float, ...]
    ...     counts: tuple[int, ...]
    ...     note: str | None = field(default=None, metadata=json_meta(omit_none=True))
    >>> Hist((0.0, 1.0), (3,)).to_json()
    {'edges': [0.0, 1.0], 'counts': [3]}
    >>> Hist.from_json({"edges": [0.0, 1.0], "counts": [3]})
    Hist(edges=(0.0, 1.0), counts=(3,), note=None)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any, TypeVar

T = TypeVar("T")
J = TypeVar("J", bound="JsonForm")

_META = "json"  # the key of a field's JSON options in its dataclasses metadata


@dataclass(frozen=True)
class Codec:
    """A field's own JSON form. ``dump(owner, value)``: the keys to write at the field's place, in order (none to
    write nothing); ``load(data)``: the field's value read from the owner's whole JSON object."""

    dump: Callable[[Any, Any], Mapping[str, Any]]
    load: Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class _Options:
    key: tuple[str, ...] | None = None
    omit_none: bool = False
    codec: Codec | None = None


def json_meta(*, key: str | tuple[str, ...] | None = None, omit_none: bool = False,
              codec: Codec | None = None) -> dict[str, Any]:
    """A field's JSON form, as the ``metadata`` of :func:`dataclasses.field` (type checkers know ``field``: a field
    without ``default`` stays required): its ``key`` (a string, or a path of keys into nested objects),
    ``omit_none`` (left out when None; a missing key reads as the default) or a ``codec`` (:class:`Codec`). Merge
    it with other metadata as ``{**json_meta(...), "unit": ...}``."""
    path = (key,) if isinstance(key, str) else key
    if codec is not None and (path is not None or omit_none):
        raise TypeError("a field with a codec writes its own keys: no key or omit_none beside it")
    return {_META: _Options(path, omit_none, codec)}


def _options(f: dataclasses.Field) -> _Options:
    return f.metadata.get(_META) or _Options()


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of ``cls``'s fields (annotations may be strings: ``from __future__ import annotations``)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def to_json(obj: Any) -> dict[str, Any]:
    """The dataclass instance ``obj`` as plain data: each field under its key, in field order (see the module)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value, opt = getattr(obj, f.name), _options(f)
        if opt.codec is not None:
            out.update(opt.codec.dump(obj, value))
        elif not (opt.omit_none and value is None):
            *outer, last = opt.key or (f.name,)
            node = out
            for k in outer:
                node = node.setdefault(k, {})
            node[last] = _dump(value)
    return out


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        own = getattr(value, "to_json", None)
        return own() if own is not None else to_json(value)
    if isinstance(value, (tuple, list)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """The instance of dataclass ``cls`` that :func:`to_json` wrote as ``data`` (keys no field reads are ignored)."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]  # T is a dataclass
        if not f.init:
            continue
        opt = _options(f)
        if opt.codec is not None:
            values[f.name] = opt.codec.load(data)
            continue
        found, stored = _lookup(data, opt.key or (f.name,))
        if found:
            values[f.name] = _load(stored, hints.get(f.name, Any))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise KeyError(".".join(opt.key or (f.name,)))
    return cls(**values)


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """(found, value) at ``path``; a missing intermediate object raises KeyError (a broken record, not an old one)."""
    *outer, last = path
    for k in outer:
        data = data[k]
    return (True, data[last]) if last in data else (False, None)


def _load(value: Any, hint: Any) -> Any:
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        present = [a for a in args if a is not type(None)]
        return _load(value, present[0]) if len(present) == 1 else value
    if origin is tuple or hint is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(v, args[0]) for v in value)
        return tuple(_load(v, a) for v, a in zip(value, args, strict=True)) if args else tuple(value)
    if origin is list or hint is list:
        return [_load(v, args[0] if args else Any) for v in value]
    if origin in (dict, Mapping) or hint is dict:
        return {k: _load(v, args[1] if args else Any) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        own = getattr(hint, "from_json", None)
        return own(value) if own is not None else from_json(hint, value)
    return value


class JsonForm:
    """Mixin for a dataclass: :meth:`to_json` and :meth:`from_json` derived from its fields (see the module)."""

    def to_json(self) -> dict[str, Any]:
        """This result as plain data: each field under its key, in field order."""
        return to_json(self)

    @classmethod
    def from_json(cls: type[J], data: Mapping[str, Any]) -> J:
        """The result :meth:`to_json` wrote (values as stored)."""
        return from_json(cls, data)
