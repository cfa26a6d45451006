"""Reading bounded request bodies and writing spec-shaped responses.

Every endpoint reads its body through here, so size caps, content-type checks and the rule "a parameter may
appear at most once" (RFC 6749 §3.1, §3.2) are enforced in one place.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from authgate.errors import NO_STORE, InvalidRequest, OAuthError, RequestTooLarge, printable

MAX_FORM_BYTES = 16 * 1024
MAX_JSON_BYTES = 64 * 1024
MAX_PARAMS = 64
#: Deepest nesting of arrays and objects a JSON body may have (client metadata with a JWKS is 4 deep).
MAX_JSON_DEPTH = 64

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_nesting_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``text`` nests arrays/objects deeper than ``limit``, judged before parsing. The interpreter's
    recursion limit is no bound to rely on: importing py-evm (the x402 chain) raises it to 12,288, after which
    ``json.loads`` would accept a 64 KiB body nested thousands deep. Brackets inside strings do not count."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise RequestTooLarge(f"request body exceeds {limit} bytes")
        except ValueError as exc:
            raise InvalidRequest("malformed Content-Length") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_unique(pairs: list[tuple[str, str]], where: str) -> dict[str, str]:
    if len(pairs) > MAX_PARAMS:
        raise InvalidRequest(f"too many {where} parameters")
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequest(f"parameter {printable(key, 64)} is repeated")
        out[key] = value
    return out


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """A form-encoded POST body as a dict; empty values count as absent (RFC 6749 §3.1)."""
    if media_type(request) != "application/x-www-form-urlencoded":
        raise InvalidRequest("content type must be application/x-www-form-urlencoded")
    body = await read_body(request, limit)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_PARAMS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("malformed form body") from exc
    return {k: v for k, v in parse_unique(pairs, "form").items() if v != ""}


def query_params(request: Request) -> dict[str, str]:
    try:
        pairs = parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=MAX_PARAMS)
    except ValueError as exc:  # more than MAX_PARAMS fields
        raise InvalidRequest("too many query parameters") from exc
    return {k: v for k, v in parse_unique(pairs, "query").items() if v != ""}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


async def read_json_object(request: Request, limit: int = MAX_JSON_BYTES, error: type[OAuthError] = InvalidRequest
                           ) -> dict[str, Any]:
    if media_type(request) != "application/json":
        raise error("content type must be application/json")
    body = await read_body(request, limit)
    try:
        # UTF-8 only (RFC 8259 §8.1); NaN and Infinity refused; lone surrogates (\ud800) cannot be stored or
        # echoed back as UTF-8, so they are refused here rather than failing later with a 500.
        text = body.decode("utf-8")
        if json_nesting_exceeds(text):
            raise RecursionError
        value = json.loads(text, parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError) as exc:
        raise error("body is not valid JSON") from exc
    except RecursionError as exc:
        raise error("body is nested too deeply") from exc
    if not isinstance(value, dict):
        raise error("body must be a JSON object")
    return value


def json_response(data: Mapping[str, Any], status_code: int = 200, headers: Mapping[str, str] | None = None,
                  *, no_store: bool = True) -> JSONResponse:
    merged = {**(NO_STORE if no_store else {}), **(headers or {})}
    return JSONResponse(dict(data), status_code=status_code, headers=merged)


def error_response(exc: OAuthError) -> Response:
    status, headers, body = exc.render()
    return Response(body, status_code=status, headers=headers)


def oauth_endpoint(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Render protocol errors as their JSON; never let an unexpected exception leak a traceback."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except OAuthError as exc:
            if exc.debug:
                logging.getLogger("authgate").info("%s %s: %s (%s)", request.method, request.url.path,
                                                   exc.error, exc.debug)
            return error_response(exc)
        except Exception:
            logging.getLogger("authgate").exception("unhandled error in %s %s", request.method, request.url.path)
            body = {"error": "server_error", "error_description": "internal error"}
            return json_response(body, 500)

    return wrapper
