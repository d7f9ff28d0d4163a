"""msgpack bodies of control frames: events to bytes and back, with limits.

A body is a msgpack map whose keys are the event's field names; a key that is
absent takes the field's default, an unknown key is ignored (so a newer peer
can add fields). Nested values are maps too (``site``, each of ``tracks``).
Decoding refuses, with a MessageError that names the field, anything that is
not valid msgpack, deeper than ``max_depth``, or of the wrong type.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

import msgpack

from .._core import Limits
from ..errors import LimitExceeded, MessageError
from . import events as ev

_NESTED = {"site": ev.Site, "tracks": ev.TrackDescription}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        # Fields added within v1 are left out while at their default, so a body an
        # older peer knows is byte-for-byte what it always was (docs/protocol.md §5.10).
        omitted = getattr(value, "omit_at_default", ())
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.name in omitted and getattr(value, f.name) == f.default)}
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def encode_body(event: ev.Event) -> bytes:
    """The msgpack body of a control event."""
    return msgpack.packb(_plain(event), use_bin_type=True)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _depth(value: Any, limit: int, level: int = 1) -> None:
    if level > limit:
        raise LimitExceeded(f"msgpack body nested deeper than max_msgpack_depth {limit}")
    if isinstance(value, dict):
        for item in value.values():
            _depth(item, limit, level + 1)
    elif isinstance(value, list):
        for item in value:
            _depth(item, limit, level + 1)


def _coerce(cls: type, name: str, expected: Any, value: Any) -> Any:
    where = f"{cls.__name__}.{name}"
    origin = typing.get_origin(expected)
    if origin is typing.Union or origin is types.UnionType:
        options = [option for option in typing.get_args(expected) if option is not type(None)]
        if value is None:
            return None
        return _coerce(cls, name, options[0], value)
    if origin is tuple:
        item_type = typing.get_args(expected)[0]
        if not isinstance(value, list):
            raise MessageError(f"{where} must be an array, got {type(value).__name__}")
        return tuple(_coerce(cls, name, item_type, item) for item in value)
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise MessageError(f"{where} must be a map, got {type(value).__name__}")
        return _from_map(expected, value)
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MessageError(f"{where} must be a number, got {type(value).__name__}")
        return float(value)
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{where} must be an integer, got {type(value).__name__}")
        return value
    if expected is bool:
        if not isinstance(value, bool):
            raise MessageError(f"{where} must be true or false, got {type(value).__name__}")
        return value
    if expected is str:
        if not isinstance(value, str):
            raise MessageError(f"{where} must be a string, got {type(value).__name__}")
        return value
    if expected is bytes:
        if not isinstance(value, bytes):
            raise MessageError(f"{where} must be binary (msgpack bin), got {type(value).__name__}")
        return value
    raise MessageError(f"{where} has a type this side cannot decode")


def _from_map(cls: type, body: dict[str, Any]) -> Any:
    types = _field_types(cls)
    arguments = {}
    for name, expected in types.items():
        if name in body:
            arguments[name] = _coerce(cls, name, expected, body[name])
    try:
        return cls(**arguments)
    except TypeError as error:
        raise MessageError(f"{cls.__name__} body is incomplete or wrong: {error}") from None
    except ValueError as error:
        raise MessageError(f"{cls.__name__}: {error}") from None


def _map_without_repeats(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack maps must not repeat a key (§5.0): {button: a, button: b} is refused, not b."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[Any] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"a map has the key {repeated!r} more than once")
    return body


def decode_body(
    frame_type: int,
    payload: Any,
    *,
    max_bytes: int = Limits.MAX_CONTROL_BYTES,
    max_depth: int = Limits.MAX_MSGPACK_DEPTH,
) -> ev.Event:
    """Turn a control frame's body into its event, or raise MessageError/LimitExceeded."""
    cls = ev.CONTROL_EVENTS.get(frame_type)
    if cls is None:
        raise MessageError(f"frame type {frame_type:#04x} has no msgpack body")
    if len(payload) > max_bytes:
        raise LimitExceeded(f"{cls.__name__} body of {len(payload)} bytes exceeds {max_bytes}")
    try:
        body = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=1024,
            max_map_len=64,
            max_ext_len=0,
            object_pairs_hook=_map_without_repeats,
        )
    except msgpack.StackError:
        # msgpack's own nesting limit (about 1024 levels), far beyond max_depth:
        # the breach _depth() reports, so the same error (code 'limit').
        raise LimitExceeded(
            f"{cls.__name__} body nested deeper than msgpack can parse "
            f"(max_msgpack_depth is {max_depth})"
        ) from None
    except (ValueError, msgpack.UnpackException, TypeError) as error:
        raise MessageError(
            f"{cls.__name__} body is not valid msgpack ({type(error).__name__}: {error})"
        ) from None
    _depth(body, max_depth)
    if not isinstance(body, dict):
        raise MessageError(f"{cls.__name__} body must be a msgpack map, got {type(body).__name__}")
    return _from_map(cls, body)
