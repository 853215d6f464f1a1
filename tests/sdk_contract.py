"""The SDK's HTTP contract as the server states it, for the JavaScript tests' fake server (tests/js/fake-wx.js).

    python -m tests.sdk_contract            writes tests/js/sdk-contract.json
    python -m tests.sdk_contract --check    exit status 1, with a diff, when that file is not what the server says

The file is derived from the OpenAPI schema (drf-spectacular, the schema /api/schema/ serves) and never edited by
hand: every operation under /sdk/v1/{appid}/ with its method, whether it takes a session, its documented
request headers and query parameters, its request body's fields (required ones, and whether others are refused) and, for every
status it documents, the top-level fields of the answer. The fake refuses to script, or to be called on, an
operation the server does not have, and checks bodies and statuses against it. A stale copy cannot pass:
``make test-js`` runs ``--check`` before node, and tests/test_sdk_contract.py compares it too (and compares the
schema with the URL map, so a route missing from the schema is caught as well).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from pathlib import Path

CONTRACT_FILE = Path(__file__).resolve().parent / "js" / "sdk-contract.json"
PREFIX = "/sdk/v1/{appid}/"
COMMAND = "python -m tests.sdk_contract"


def openapi_schema() -> dict:
    """The schema exactly as ``manage.py spectacular`` writes it (same generator class and hooks)."""
    from drf_spectacular.settings import spectacular_settings

    generator = spectacular_settings.DEFAULT_GENERATOR_CLASS()  # imported already by the settings object
    return generator.get_schema(request=None, public=True)


def _resolve(schema: dict, node: dict | None) -> dict:
    while node and "$ref" in node:
        name = node["$ref"].rpartition("/")[2]
        node = schema["components"]["schemas"][name]
    return node or {}


def _json_body(schema: dict, holder: dict | None, *, request: bool) -> dict | None:
    """A JSON body's top-level fields; a request's also say whether other fields are refused (the server's
    serializers refuse them: ``additionalProperties: false``)."""
    content = (holder or {}).get("content", {})
    if "application/json" not in content:
        return None
    body = _resolve(schema, content["application/json"].get("schema"))
    shape = {"properties": sorted(body.get("properties", {})), "required": sorted(body.get("required", []))}
    if request:
        shape["additional"] = body.get("additionalProperties", True) is not False
    return shape


def build_contract(schema: dict | None = None) -> dict:
    schema = schema or openapi_schema()
    operations = {}
    for path, item in schema["paths"].items():
        if not path.startswith(PREFIX):
            continue
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            operations[f"{method.upper()} {path[len(PREFIX) :]}"] = {
                "operation_id": op["operationId"],
                "session": any("Session" in requirement for requirement in op.get("security") or []),
                "headers": sorted(p["name"] for p in op.get("parameters", []) if p["in"] == "header"),
                "query": sorted(p["name"] for p in op.get("parameters", []) if p["in"] == "query"),
                "request": _json_body(schema, op.get("requestBody"), request=True),
                "responses": {
                    status: _json_body(schema, answer, request=False)
                    for status, answer in sorted(op["responses"].items())
                },
            }
    return {
        "generated": f"by `{COMMAND}` from the server's OpenAPI schema: do not edit; "
        "tests/test_sdk_contract.py and `make test-js` fail when it is stale",
        "prefix": PREFIX,
        "operations": dict(sorted(operations.items())),
    }


def render(contract: dict) -> str:
    """JSON with one line per field of an operation (and per status), so a change reads as a one-line diff."""

    def one(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{", f'  "generated": {one(contract["generated"])},', f'  "prefix": {one(contract["prefix"])},']
    lines.append('  "operations": {')
    ops = list(contract["operations"].items())
    for i, (name, op) in enumerate(ops):
        lines.append(f"    {one(name)}: {{")
        for key in ("operation_id", "session", "headers", "query", "request"):
            lines.append(f"      {one(key)}: {one(op[key])},")
        lines.append('      "responses": {')
        statuses = list(op["responses"].items())
        for j, (status, shape) in enumerate(statuses):
            lines.append(f"        {one(status)}: {one(shape)}{',' if j < len(statuses) - 1 else ''}")
        lines.append("      }")
        lines.append("    }" + ("," if i < len(ops) - 1 else ""))
    lines += ["  }", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == contract
    return text


def stale_diff(contract: dict | None = None) -> str:
    """Empty when the checked-in file is what the server says (``contract``, else built now); else a unified
    diff (file → server)."""
    expected = render(contract or build_contract())
    actual = CONTRACT_FILE.read_text(encoding="utf-8") if CONTRACT_FILE.exists() else ""
    if actual == expected:
        return ""
    return "".join(
        difflib.unified_diff(
            actual.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            "tests/js/sdk-contract.json",
            "the server's OpenAPI schema",
        )
    )


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushhub.settings")
    import django

    django.setup()
    if "--check" in argv:
        diff = stale_diff()
        if diff:
            sys.stderr.write(diff)
            sys.stderr.write(
                f"\n{CONTRACT_FILE.name} is not what the server says: the JavaScript tests' fake server would "
                f"answer what PushHub does not. Regenerate it with `{COMMAND}` and fix what the JS tests "
                "then show.\n"
            )
            return 1
        print(f"{CONTRACT_FILE.name} matches the server's OpenAPI schema")
        return 0
    CONTRACT_FILE.write_text(render(build_contract()), encoding="utf-8")
    print(f"wrote {CONTRACT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
