"""``/openapi.json`` and the app's routes agree both ways: every route a program calls is in the document, and
every documented path and method is served, for the settings that add or remove parts (authgate.openapi's
docstring states the rule)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from authgate import openapi
from authgate.app import build_context, create_app
from authgate.config import Settings
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.mount import LazyFacilitator
from authgate.x402.facilitator.service import Facilitator

ISSUER = "http://127.0.0.1:9000"
#: uvicorn (httptools) refuses a request head over 64 KiB with a plain-text 400 before the app sees it, which no
#: operation documents; the bounds of the parameters keep every documented request well under that.
HEAD_BUDGET = 48 * 1024

#: Served but deliberately not described (see authgate.openapi): the operator dashboard and the person's own
#: page, web UIs behind their own sign-in that no protocol sends anyone to (docs/dashboard.md).
EXCLUDED_PREFIXES = ("/admin", "/me")
#: Methods the document leaves implicit: Starlette answers HEAD for every GET.
IMPLICIT_METHODS = {"head"}
#: Every method a client might try on a documented path; the ones not documented must get 405.
PROBED_METHODS = ("get", "post", "put", "patch", "delete", "options")
#: A route that takes all of these into one handler (``/register``) serves the documented ones and answers the
#: rest 405 itself: test_undocumented_methods_get_405_with_allow holds it to that.
DISPATCHING = {m.upper() for m in PROBED_METHODS}

ALL_ON: dict[str, Any] = {"agentauth_enabled": True, "agentauth_allow_http_loopback": True,
                          "x402_facilitator": True, "metrics_enabled": True, "dashboard_enabled": True,
                          "registration": "open"}
VARIANTS: dict[str, dict[str, Any]] = {
    "everything on": ALL_ON,
    "defaults": {},
    "optional parts off": {"agentauth_enabled": False, "x402_facilitator": False, "metrics_enabled": False,
                           "dashboard_enabled": False, "registration": "closed"},
    "tokens and codes": {**ALL_ON, "registration": "token", "metrics_token": "m" * 32,
                         "x402_facilitator_token": "f" * 32, "approvals_link_requires_code": True},
}


def _excluded(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in EXCLUDED_PREFIXES)


def _mounted_routes(mount: Mount) -> list[BaseRoute]:
    if isinstance(mount.app, LazyFacilitator):
        # The facilitator builds its chain on first use; the app it then serves is create_facilitator_app's, whose
        # route table does not depend on the facilitator object.
        return list(create_facilitator_app(cast(Facilitator, None)).routes)
    return list(mount.routes)


def served_operations(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, bool]]:
    """(path template, lower-case method, whether the route dispatches every method itself) for every route,
    mounts included."""
    for route in routes:
        if isinstance(route, Route):
            dispatching = set(route.methods or ()) >= DISPATCHING
            for method in route.methods or ():
                yield prefix + route.path, method.lower(), dispatching
        elif isinstance(route, Mount):
            yield from served_operations(_mounted_routes(route), prefix + route.path)
        else:  # a new kind of route (websocket, host): decide how the document describes it
            raise AssertionError(f"unexpected route {route!r}")


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item}


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return replace(Settings(issuer=ISSUER, data_dir=tmp_path), **overrides).validate()


@contextlib.asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[tuple[Any, list[BaseRoute]]]:
    """The app ``authgate serve`` would run with ``settings``, and its route table."""
    ctx = await build_context(settings)
    app = create_app(ctx)
    routes = list(app.app.routes)  # ops_http.Observed wraps the Starlette app
    try:
        yield app, routes
    finally:
        for route in routes:  # no lifespan here: close a facilitator chain a request built
            if isinstance(route, Mount) and isinstance(route.app, LazyFacilitator):
                await route.app.aclose()
        await ctx.store.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_every_api_route_is_documented_and_every_documented_operation_is_served(
        tmp_path: Path, variant: str) -> None:
    settings = _settings(tmp_path, **VARIANTS[variant])
    async with _app(settings) as (_, routes):
        operations = list(served_operations(routes))
    doc = openapi.document(settings)
    documented = documented_operations(doc)
    served = {(p, m) for p, m, _ in operations}

    undocumented = sorted(
        (p, m) for p, m, dispatching in operations
        if (p, m) not in documented and m not in IMPLICIT_METHODS and not _excluded(p)
        and not (dispatching and p in doc["paths"]))  # the rest of a dispatching route's methods: 405
    assert not undocumented, f"served but not in /openapi.json: {undocumented}"

    not_served = sorted(documented - served)
    assert not not_served, f"in /openapi.json but not served: {not_served}"
    assert not any(_excluded(p) for p, _ in documented)
    if settings.dashboard_enabled:  # the exclusion list names something real
        assert any(_excluded(p) for p, _ in served), "nothing to exclude: drop EXCLUDED_PREFIXES"


async def test_undocumented_methods_get_405_with_allow(tmp_path: Path) -> None:
    """What the document leaves out of a documented path is not served: 405 and ``Allow`` (OAuth JSON, except
    inside the x402 facilitator, whose own app answers it)."""
    settings = _settings(tmp_path, **ALL_ON)
    doc = openapi.document(settings)
    async with _app(settings) as (app, _):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            for path, item in doc["paths"].items():
                url = re.sub(r"\{[^}]+\}", "x", path)
                for method in PROBED_METHODS:
                    if method in item:
                        continue
                    response = await http.request(method.upper(), url)
                    assert response.status_code == 405, (method, path, response.status_code, response.text[:200])
                    assert response.headers.get("allow"), (method, path)


async def test_served_document_is_the_one_for_the_servers_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **ALL_ON)
    async with _app(settings) as (app, _):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            response = await http.get("/openapi.json")
        assert response.status_code == 200
        assert response.json() == openapi.document(settings)
        assert response.json()["servers"] == [{"url": ISSUER}]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_document_is_self_consistent(tmp_path: Path, variant: str) -> None:
    """Every ``$ref`` and security scheme resolves, every path parameter is declared, every schema is valid
    JSON Schema 2020-12 (what OpenAPI 3.1 uses)."""
    jsonschema = pytest.importorskip("jsonschema")
    doc = openapi.document(_settings(tmp_path, **VARIANTS[variant]))
    components = doc["components"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in components["schemas"], ref
    for name, schema in components["schemas"].items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise AssertionError(f"schema {name}: {exc.message}") from None
    for path, item in doc["paths"].items():
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, (method, path)
            for requirement in op.get("security", []):
                assert set(requirement) <= set(components["securitySchemes"]), (method, path, requirement)
            assert op["responses"], (method, path)
            assert all(code.isdigit() and 200 <= int(code) < 600 for code in op["responses"]), (method, path)


def _worst_case_bytes(param: dict[str, Any]) -> int:
    """Bytes a parameter can take on the wire: percent-encoded UTF-8 in the URL (12 bytes for a 4-byte
    character, 3 for an ASCII one), Latin-1 in a header."""
    schema = param["schema"]
    if "enum" in schema:
        return 3 * max(len(str(v)) for v in schema["enum"])
    assert "maxLength" in schema, f"{param['name']}: every string parameter needs a bound"
    if param["in"] == "header":
        return int(schema["maxLength"])
    pattern = schema.get("pattern", "")
    # A pattern of ASCII character classes (no ".", "\\S", "[^...]") admits ASCII only.
    ascii_only = pattern.isascii() and not re.search(r"\\[SWDsw]|(?<!\\)\.|\[\^", pattern)
    return int(schema["maxLength"]) * (3 if pattern and ascii_only else 12)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_documented_request_fits_the_http_servers_head_limit(tmp_path: Path, variant: str) -> None:
    doc = openapi.document(_settings(tmp_path, **VARIANTS[variant]))
    for path, item in doc["paths"].items():
        for method, op in item.items():
            params = op.get("parameters", [])
            size = len(path) * 12 + sum(len(p["name"]) + 2 + _worst_case_bytes(p) for p in params)
            assert size <= HEAD_BUDGET, (method, path, size)
