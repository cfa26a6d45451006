"""The standalone gateway's operations surface: ``/health`` (alive), ``/ready`` (can serve: the upstream answers,
the authorization server's keys and the facilitator are reachable) and ``/metrics`` (Prometheus text), on paths
of its own that never shadow an upstream route.

The file's optional section::

    [operations]
    health_path = "/_authgate/health"       # "" turns an endpoint off
    ready_path = "/_authgate/ready"
    metrics_path = "/_authgate/metrics"
    metrics_token_env = "AUTHGATE_METRICS_TOKEN"   # or metrics_token_file: /metrics only to "Bearer <token>"
    upstream_ready_path = "/"               # what /ready asks the upstream (any answer below 500 is ready)
    ready_timeout = 2.0                     # seconds per readiness check

The defaults live under ``/_authgate/`` so that they do not take a path an API is likely to use; a policy route
that covers one of them is refused when the gateway is built (it would be the gateway's answer, not the
upstream's). Only a hash of the metrics token is kept, and it is compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from authgate.ops.decisions import ROUTE_KEY
from authgate.ops.metrics import CONTENT_TYPE, Metrics
from authgate.policy.model import Policy, PolicyError

_KEYS: dict[str, Any] = {"health_path": str, "ready_path": str, "metrics_path": str, "metrics_token_env": str,
                         "metrics_token_file": str, "upstream_ready_path": str, "ready_timeout": (int, float)}
_PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&'()+,;=:@/]{0,127}$")
#: Documents the policy middleware serves itself: an operations path there would hide them.
_RESERVED_PREFIX = "/.well-known/"


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Operations:
    """Where the gateway answers for itself. A path of ``""`` turns that endpoint off."""

    health_path: str = "/_authgate/health"
    ready_path: str = "/_authgate/ready"
    metrics_path: str = "/_authgate/metrics"
    #: SHA-256 of the bearer token /metrics requires; None: /metrics is open (keep it off the public network).
    metrics_token_sha256: bytes | None = field(default=None, repr=False)
    upstream_ready_path: str = "/"
    ready_timeout: float = 2.0

    def paths(self) -> dict[str, str]:
        """Enabled endpoints: field name -> path."""
        named = {"health_path": self.health_path, "ready_path": self.ready_path, "metrics_path": self.metrics_path}
        return {k: v for k, v in named.items() if v}


def operations_from_dict(data: Mapping[str, Any], *, source: str, env: Mapping[str, str],
                         base_dir: Path | None) -> Operations:
    """The ``[operations]`` section (defaults when absent), checked; secrets from the environment or a file."""
    raw = data.get("operations")
    if raw is None:
        return Operations()
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: [operations]: must be a table")
    for key, value in raw.items():
        if key not in _KEYS:
            raise PolicyError(f"{source}: [operations]: unknown field {key!r} (expected {', '.join(sorted(_KEYS))})")
        if isinstance(value, bool) or not isinstance(value, _KEYS[key]):
            raise PolicyError(f"{source}: [operations]: {key}: wrong type {type(value).__name__}")
    defaults = Operations()
    paths = {k: raw.get(k, getattr(defaults, k)) for k in ("health_path", "ready_path", "metrics_path")}
    for key, path in paths.items():
        if path and not _normal(path):
            raise PolicyError(f"{source}: [operations]: {key}: must be an absolute path of at most 128 characters "
                              f"without dot segments, '//', '*', query or fragment (or \"\" to turn it off), not "
                              f"{path!r}")
        if path.startswith(_RESERVED_PREFIX):
            raise PolicyError(f"{source}: [operations]: {key}: {path!r} is under {_RESERVED_PREFIX}, where the "
                              "gateway serves its protocol documents")
    enabled = [p for p in paths.values() if p]
    if len(set(enabled)) != len(enabled):
        raise PolicyError(f"{source}: [operations]: health_path, ready_path and metrics_path must differ")
    probe = raw.get("upstream_ready_path", defaults.upstream_ready_path)
    if not _normal(probe):
        raise PolicyError(f"{source}: [operations]: upstream_ready_path: must be an absolute path, not {probe!r}")
    timeout = float(raw.get("ready_timeout", defaults.ready_timeout))
    if not 0.1 <= timeout <= 60:
        raise PolicyError(f"{source}: [operations]: ready_timeout: must be between 0.1 and 60")
    digest: bytes | None = None
    if "metrics_token_env" in raw and "metrics_token_file" in raw:
        raise PolicyError(f"{source}: [operations]: give metrics_token_env or metrics_token_file, not both")
    if "metrics_token_env" in raw:
        text = env.get(raw["metrics_token_env"])
        if not text:
            raise PolicyError(f"{source}: [operations]: metrics_token_env: ${raw['metrics_token_env']} is not set")
        digest = token_digest(text)
    elif "metrics_token_file" in raw:
        p = Path(raw["metrics_token_file"])
        p = p if p.is_absolute() or base_dir is None else base_dir / p
        try:
            text = p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise PolicyError(f"{source}: [operations]: metrics_token_file: {p} cannot be read") from None
        if not text:
            raise PolicyError(f"{source}: [operations]: metrics_token_file: {p} is empty")
        digest = token_digest(text)
    return Operations(health_path=paths["health_path"], ready_path=paths["ready_path"],
                      metrics_path=paths["metrics_path"], metrics_token_sha256=digest, upstream_ready_path=probe,
                      ready_timeout=timeout)


def _normal(path: str) -> bool:
    segments = path.split("/")[1:]
    return bool(_PATH.match(path)) and "//" not in path and not any(s in (".", "..") for s in segments)


def check_paths(ops: Operations, policy: Policy, source: str) -> None:
    """Refuse a policy route that covers an operations path: the gateway would answer in the upstream's place."""
    for key, path in ops.paths().items():
        for i, route in enumerate(policy.routes):
            method = next(iter(route.methods)) if route.methods else "GET"
            if route.matches(method, path):
                raise PolicyError(
                    f"{source}: [operations]: {key} = {path!r} is also matched by routes[{i}] ({route.label}): the "
                    "gateway would answer it instead of the upstream; choose another path in [operations] (or \"\" "
                    "to turn that endpoint off)")


Check = Callable[[], Awaitable[str | None]]


class Readiness:
    """Runs the checks (concurrently, each bounded by its own timeout) for every caller waiting at that moment:
    however often ``/ready`` is asked, at most one round of checks is in flight, so it cannot be used to flood
    the upstream, the authorization server or the facilitator."""

    def __init__(self, checks: Mapping[str, Check], timeout: float) -> None:
        self.checks = dict(checks)
        self.timeout = timeout
        self._inflight: asyncio.Task[list[str]] | None = None

    async def problems(self) -> list[str]:
        task = self._inflight
        if task is None or task.done():
            task = self._inflight = asyncio.ensure_future(self._run())
        return list(await asyncio.shield(task))

    async def _run(self) -> list[str]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._one(name) for name in names))
        return [r for r in results if r]

    async def _one(self, name: str) -> str | None:
        try:
            problem = await asyncio.wait_for(self.checks[name](), self.timeout)
        except TimeoutError:
            return f"{name}: no answer within {self.timeout:g}s"
        except Exception as exc:
            return f"{name}: {type(exc).__name__}"
        return f"{name}: {problem}" if problem else None


def metrics_allowed(authorization: str | None, token_sha256: bytes | None) -> bool:
    """True when no token is required or ``Authorization`` is ``Bearer <token>`` (compared as hashes, in constant
    time)."""
    if token_sha256 is None:
        return True
    given = authorization or ""
    scheme, _, value = given.partition(" ")
    presented = token_digest(value.strip()) if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(presented, token_sha256)


class OperationsEndpoints:
    """Answers the operations paths (any method: GET and HEAD, else 405) and hands everything else to ``app``."""

    def __init__(self, app: ASGIApp, ops: Operations, metrics: Metrics, readiness: Readiness) -> None:
        self.app = app
        self.metrics = metrics
        self.readiness = readiness
        self.token = ops.metrics_token_sha256
        self.handlers = {path: getattr(self, "_" + key.removesuffix("_path")) for key, path in ops.paths().items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[ROUTE_KEY] = scope["path"]
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _send(send, 405, b'{"error":"invalid_request","error_description":"Method not allowed"}',
                        [(b"content-type", b"application/json"), (b"allow", b"GET, HEAD")], head=False)
            return
        status, headers, body = await handler(scope)
        await _send(send, status, body, [(b"cache-control", b"no-store"), *headers], head=method == "HEAD")

    async def _health(self, _: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        return 200, [(b"content-type", b"application/json")], b'{"status":"ok"}'

    async def _ready(self, _: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        problems = await self.readiness.problems()
        body: dict[str, Any] = {"status": "ready" if not problems else "not ready"}
        if problems:
            body["problems"] = problems
        return 200 if not problems else 503, [(b"content-type", b"application/json")], json.dumps(body).encode()

    async def _metrics(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        authorization = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"authorization"),
                             None)
        if not metrics_allowed(authorization, self.token):
            return 401, [(b"content-type", b"application/json"), (b"www-authenticate", b'Bearer realm="metrics"')], \
                b'{"error":"invalid_token","error_description":"metrics need the bearer token"}'
        return 200, [(b"content-type", CONTENT_TYPE.encode())], self.metrics.exposition()


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, head: bool) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": b"" if head else body})
