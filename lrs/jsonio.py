"""JSON in and out of the LRS, exactly: statements must come back as they were sent."""

from __future__ import annotations

import json
import re

import orjson

from lrs.errors import XAPIError

_LONG_INTEGER = re.compile(rb"\d{19,}")


def loads_json(body: bytes) -> object:
    """Parse JSON exactly: orjson for speed, the standard library when the text holds an
    integer too long for 64 bits (orjson would turn it into a float and change the data)."""
    try:
        if _LONG_INTEGER.search(body):
            return json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise XAPIError(f"the request body is not valid JSON: {exc}") from None


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def dumps_json(value: object) -> bytes:
    """Serialise what :func:`loads_json` produced, long integers included."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
