"""Requests that do not fit their schema, described for people: the field at fault, and why, in JSON.

FastAPI's own descriptions need four corrections before a client sees them:
- a body that is not JSON is located at the character where parsing stopped (`["body", 7]`),
  which reads as a field named "7"; it is the body as a whole that is wrong, and the message says where;
- a body that is not an object says only "Input should be a valid dictionary or object to extract
  fields from"; most often the JSON was sent as a form (`curl -d` without a Content-Type), which FastAPI
  does not parse at all, so the message names the header;
- each error echoes its input, and Python's `json` reads `NaN`, `Infinity` and `1e999` as floats
  that no JSON response can hold: the answer itself would fail, as a 500. An echoed input is also
  abridged, so that a megabyte refused comes back as a few hundred bytes that still show what it was;
- a field that takes one of several shapes (`stop: str | list[str]`) is located with the shape pydantic
  tried (`stop.str`, `stop.list[str].0`), a field no client sent; the location drops it (`stop`, `stop.0`),
  found by following the location through the route's body model, not by the look of the name.
"""

from __future__ import annotations

import math
import types
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

BODY = "body"
_LOCATIONS = ("body", "query", "path", "header")


def describe(errors: list[Any], content_type: str | None) -> dict[str, Any]:
    """A 422's body for FastAPI's `errors`: the first ECHO_ITEMS of them, each named and abridged."""
    shown = [json_safe(error) for error in errors[:ECHO_ITEMS]]
    message = "; ".join(message_of(error, content_type) for error in shown)
    if len(errors) > len(shown):
        message += f"; and {len(errors) - len(shown):,} more"
    details = {"key": field_of(shown[0]) if shown else None, "errors": shown, "error_count": len(errors)}
    return {"code": "INVALID_REQUEST", "message": message, "details": details}


def as_sent(errors: list[Any], request: Request) -> list[Any]:
    """FastAPI's `errors` for `request`, each located by the fields the client sent (no union member)."""
    field = getattr(request.scope.get("route"), "body_field", None)
    model = field.field_info.annotation if field is not None else None
    return [{**error, "loc": _without_union_members(tuple(error.get("loc", ())), model)} for error in errors]


def _without_union_members(loc: tuple[Any, ...], model: Any) -> tuple[Any, ...]:
    """`loc` less each part that names which member of a union pydantic tried: the part after a union field."""
    if loc[:1] != (BODY,):
        return loc
    kept: list[Any] = [BODY]
    annotation = model
    for part in loc[1:]:
        members = _members(annotation)
        if len(members) > 1 and isinstance(part, str):
            annotation = None  # which member it was is pydantic's choice; the parts below are the client's again
            continue
        kept.append(part)
        annotation = _inner(members[0], part) if members else None
    return tuple(kept)


def _members(annotation: Any) -> list[Any]:
    """The types a value of `annotation` may have (None left out, as pydantic names no member for it)."""
    if annotation is None:
        return []
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        return [member for member in get_args(annotation) if member is not type(None)]
    return [annotation]


def _inner(annotation: Any, part: Any) -> Any:
    """The annotation of `part` (a field name, list index or dict key) within a value of `annotation`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields.items()
        return next((f.annotation for name, f in fields if (f.alias or name) == part), None)
    args = get_args(annotation)
    if get_origin(annotation) in (list, set, frozenset) and args:
        return args[0]
    if get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    return None


def field_of(error: dict[str, Any]) -> str | None:
    """The dotted field an error is about (`messages.0.role`), or None when it is the body as a whole."""
    if error.get("type") == "json_invalid":
        return None
    return ".".join(str(part) for part in error.get("loc", ()) if part not in _LOCATIONS) or None


VALUE_ERROR = "Value error, "  # pydantic's prefix to a validator's own message, which says it all


def message_of(error: dict[str, Any], content_type: str | None = None) -> str:
    """`field: what is wrong`; for the body as a whole, what it is and, if it was not sent as JSON, the header.

    `content_type` is the request's Content-Type header (None when absent, which FastAPI reads as JSON).
    """
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        why = (error.get("ctx") or {}).get("error") or "invalid"
        return f"{BODY}: not valid JSON ({why}{at})"
    if error.get("type") == "model_attributes_type" and loc == (BODY,):
        if not is_json(content_type):
            sent = f"Content-Type: {content_type}"
            return f"{BODY}: send a JSON object with 'Content-Type: application/json' (this request has '{sent}')"
        return f"{BODY}: must be a JSON object, got {json_kind(error.get('input'))}"
    return f"{field_of(error) or BODY}: {str(error.get('msg', 'invalid')).removeprefix(VALUE_ERROR)}"


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this Content-Type as JSON (none given counts as JSON, as there)."""
    if not content_type:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


ECHO_CHARACTERS = 200  # of a refused string, repeated in the answer
ECHO_ITEMS = 20  # of a refused list or object


def json_safe(value: Any) -> Any:
    """`value` as JSON can hold it, abridged: every non-finite float as its name ("nan", "inf", "-inf"),
    strings past ECHO_CHARACTERS and lists past ECHO_ITEMS cut, saying how long they were."""
    return _presentable(jsonable_encoder(value))


def _presentable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str) and len(value) > ECHO_CHARACTERS:
        return f"{value[:ECHO_CHARACTERS]}… ({len(value):,} characters)"
    if isinstance(value, dict):
        items = list(value.items())
        kept = {key: _presentable(item) for key, item in items[:ECHO_ITEMS]}
        return kept | ({"…": f"{len(items):,} keys"} if len(items) > ECHO_ITEMS else {})
    if isinstance(value, list):
        kept_items = [_presentable(item) for item in value[:ECHO_ITEMS]]
        return kept_items + ([f"… ({len(value):,} items)"] if len(value) > ECHO_ITEMS else [])
    return value
