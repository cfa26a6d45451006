"""What the agent provider and person server endpoints share: keys, issuer-key discovery, replay cache, request
verification and error rendering. Built once per app by :func:`authgate.agentauth.routes`."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence

from starlette.requests import Request
from starlette.responses import Response

from authgate.agentauth import wire
from authgate.agentauth.discovery import IssuerKeys, fetcher_json
from authgate.agentauth.errors import Problem, TokenProblem
from authgate.agentauth.keys import AgentAuthKeys
from authgate.agentauth.replay import DatabaseReplayCache, ReplayCache
from authgate.agentauth.signing import Caller, scope_headers, scope_target, verify_signed
from authgate.agentauth.tokens import PublicKey, Signer
from authgate.context import ServerContext
from authgate.crypto.httpsig import SignatureError
from authgate.errors import OAuthError
from authgate.httputil import read_body
from authgate.net import Fetcher

log = logging.getLogger("authgate.agentauth")
MAX_BODY = 32 * 1024


class AgentAuthServer:
    """Our issuer acting as agent provider and person server (same origin, separate metadata documents)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.issuer = ctx.settings.issuer_url
        self.keys = AgentAuthKeys(ctx.store, ctx.clock)
        fetcher = ctx.fetcher or Fetcher(allow_loopback=ctx.settings.allow_loopback_fetch)
        own = {(self.issuer, dwk): self.keys.public_key for dwk in (wire.DWK_AGENT, wire.DWK_PERSON)}
        self.issuer_keys = IssuerKeys(fetcher_json(fetcher), clock=ctx.clock.now, local=own)
        self.replay: ReplayCache = ctx.replay_cache or DatabaseReplayCache(ctx.store)
        self._pairwise_secret: bytes | None = None

    @property
    def allow_http(self) -> bool:
        return self.settings.agentauth_allow_http_loopback

    def now(self) -> int:
        return self.ctx.now()

    async def signer(self) -> Signer:
        return await self.keys.signer()

    async def resolve(self, iss: str, dwk: str, kid: str | None) -> PublicKey | None:
        return await self.issuer_keys.resolve(iss, dwk, kid)

    async def is_revoked(self, iss: str, jti: str) -> bool:
        """Only tokens we issued can be known revoked here."""
        return iss == self.issuer and (await self.ctx.store.agentauth.token_revoked(jti)
                                       or await self.ctx.killswitch.agentauth_token_killed(jti))

    async def pairwise_sub(self, person: str, resource: str) -> str:
        """Directed ``sub`` (profile §17.14): HMAC(secret, person ‖ resource); stable across agents and keys."""
        if self._pairwise_secret is None:
            import secrets

            value = await self.ctx.store.server_secret("agentauth_pairwise", lambda: secrets.token_hex(32))
            self._pairwise_secret = bytes.fromhex(value)
        mac = hmac.new(self._pairwise_secret, f"{person}\0{resource}".encode(), hashlib.sha256).digest()
        import base64

        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    async def verify(self, request: Request, body: bytes, *, token_types: Sequence[str] = (wire.TYP_AGENT,),
                     body_components: bool = True) -> Caller:
        host, path, query = scope_target(request.scope)
        scheme = "https" if self.issuer.startswith("https") else "http"
        authority = self.issuer.split("://", 1)[1]
        return await verify_signed(
            method=request.method, authority=host, path=path, query=query, headers=scope_headers(request.scope),
            body=body, now=self.now(), resolve=self.resolve, token_types=token_types, is_revoked=self.is_revoked,
            replay=self.replay, canonical_authorities=(authority,), scheme=scheme,
            required_components=wire.BODY_COMPONENTS if body_components and body else (),
            allow_http_loopback=self.allow_http)


def endpoint(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Render :class:`Problem`, :class:`SignatureError` and stray :class:`TokenProblem` as the spec's errors;
    never a traceback."""

    @functools.wraps(fn)
    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except SignatureError as exc:
            log.info("%s %s: signature refused: %s (%s)", request.method, request.url.path, exc.code, exc.reason)
            status, headers, body = exc.render()
        except TokenProblem as exc:
            log.info("%s %s: token refused: %s (%s)", request.method, request.url.path, exc.code, exc.debug)
            status, headers, body = Problem(400, wire.E_INVALID_REQUEST, "a token was refused").render()
        except Problem as exc:
            if exc.debug:
                log.info("%s %s: %s (%s)", request.method, request.url.path, exc.error, exc.debug)
            status, headers, body = exc.render()
        except OAuthError as exc:  # body too large, malformed Content-Length
            status, headers, body = Problem(exc.status_code, wire.E_INVALID_REQUEST, exc.description).render()
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.url.path)
            status, headers, body = Problem(500, wire.E_SERVER_ERROR, "internal error").render()
        return Response(body, status_code=status, headers=headers)

    return wrapper


async def read_limited(request: Request) -> bytes:
    return await read_body(request, MAX_BODY)
