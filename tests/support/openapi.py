"""Check a response against the OpenAPI document the app itself publishes.

A small JSON Schema subset (``$ref``, ``anyOf``, ``type``, ``properties``,
``required``, ``items``, ``enum``, ``const``, bounds): exactly what FastAPI emits
for the dashboard, so the tests need no schema library. A keyword it does not
know fails loudly instead of passing silently.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES: dict[str, Any] = {
    "object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
    "integer": int, "number": (int, float),
}
_ANNOTATIONS = {"title", "description", "default", "examples", "format", "deprecated"}


def errors(schema: dict, value: Any, doc: dict, where: str = "$") -> list[str]:
    """What is wrong with ``value`` under ``schema`` (refs resolved in ``doc``); [] = valid."""
    if "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return errors(target, value, doc, where)
    if "anyOf" in schema:
        return [] if any(not errors(s, value, doc, where) for s in schema["anyOf"]) else [f"{where}: no anyOf matches"]
    out: list[str] = []
    for key, want in schema.items():
        if key == "type":
            ok = isinstance(value, _TYPES[want]) and not (want in ("integer", "number") and isinstance(value, bool))
            if not ok:
                return [f"{where}: {type(value).__name__} is not {want}"]
        elif key == "properties":
            for name, sub in want.items():
                if isinstance(value, dict) and name in value:
                    out += errors(sub, value[name], doc, f"{where}.{name}")
        elif key == "required":
            out += [f"{where}: missing {name!r}" for name in want if isinstance(value, dict) and name not in value]
        elif key == "items":
            for i, v in enumerate(value if isinstance(value, list) else []):
                out += errors(want, v, doc, f"{where}[{i}]")
        elif key == "additionalProperties":
            if isinstance(want, dict) and isinstance(value, dict):
                for name, v in value.items():
                    if name not in schema.get("properties", {}):
                        out += errors(want, v, doc, f"{where}.{name}")
        elif key == "enum":
            out += [] if value in want else [f"{where}: {value!r} not in {want}"]
        elif key == "const":
            out += [] if value == want else [f"{where}: {value!r} != {want!r}"]
        elif key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            bad = {"minimum": value < want, "maximum": value > want,
                   "exclusiveMinimum": value <= want, "exclusiveMaximum": value >= want}[key]
            out += [f"{where}: {value!r} breaks {key} {want}"] if bad else []
        elif key == "pattern":
            out += [] if re.search(want, value) else [f"{where}: {value!r} !~ {want}"]
        elif key not in _ANNOTATIONS:
            raise NotImplementedError(f"schema keyword {key!r} at {where}")
    return out


def response_errors(doc: dict, path: str, status: int, body: Any, method: str = "get") -> list[str]:
    """What is wrong with a ``status`` response of ``path`` (a template such as ``/api/runs/{run_id}``)
    according to ``doc``: an undocumented status, a status without a JSON schema, or a body that breaks it."""
    responses = doc["paths"][path][method]["responses"]
    spec = responses.get(str(status)) or responses.get("default")
    if spec is None:
        return [f"{status} is not documented for {path} (documented: {sorted(responses)})"]
    schema = spec.get("content", {}).get("application/json", {}).get("schema")
    if schema is None:
        return [f"{status} of {path} declares no JSON body"]
    return errors(schema, body, doc)
