"""Agent SDK for Agent Auth (draft-hardt-oauth-aauth-protocol-11): an ``httpx.Auth`` that signs every request and
answers ``AAuth-Requirement`` challenges by itself.

    key = AgentKey.load_or_create("~/.config/my-agent/key.json")        # Ed25519, file mode 0600
    # or, with ``pip install 'authgate[keyring]'``: KeyringKeyStore("my-agent").load_or_create()
    auth = AgentAuth(key, agent_token, on_interaction=show_to_user)
    async with httpx.AsyncClient(auth=auth) as http:
        r = await http.post("https://api.example/notes", json={...})

Per request: the freshest token this agent holds for the request's origin — an auth token, else a person token,
else the agent token — goes in ``Signature-Key: sig=jwt;jwt="…"`` and the request is signed (RFC 9421, via
:mod:`authgate.crypto.httpsig`: covered ``@method @authority @path signature-key``, plus ``content-type
content-digest`` for a body, ``authorization`` when sent). On ``401``:

* ``requirement=person-token`` → a person token for that resource from the agent's person server (``ps`` of
  the agent token), then retry;
* ``requirement=auth-token; resource-token=…`` → the resource token is checked (``iss`` = the origin called,
  ``aud`` and ``ps`` = our person server, ``agent_jkt`` = our key: we never forward a token meant for another
  key or server), exchanged at the person server with the token we presented (``202`` → signed polling of
  ``Location`` with ``Prefer: wait``, ``interaction`` URL/code handed to ``on_interaction``, overall ``timeout``),
  then retry;
* ``Signature-Error: error=expired_jwt`` on the agent token → the agent token is refreshed, then retry.

At most ``max_retries`` rounds per request; then the server's last response is returned unchanged. Tokens are
cached per origin (consent stays scoped: a token for one resource is never presented to another) and renewed
``refresh_margin`` seconds before expiry. Depends on ``httpx`` and ``cryptography`` only (the optional OS keyring
store, :class:`KeyringKeyStore`, imports ``keyring`` when first used).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from authgate.crypto.httpsig import sign_request
from authgate.crypto.jwk import jwk_thumbprint, public_jwk
from authgate.crypto.signature_key import jwt_scheme

Interaction = Callable[[str, str], Awaitable[None] | None]
_REQ_PARAM = re.compile(r'([a-z0-9_-]+)=(?:"((?:[^"\\]|\\.)*)"|([^;,\s]+))')
SIGNATURE_HEADERS = ("signature", "signature-input", "signature-key", "content-digest")
#: Polls of a pending request are at least this many seconds apart (start to start).
MIN_POLL_INTERVAL = 1.0
#: Our own calls to the person server and provider go out unsigned by the client's auth (we sign them here).
_NO_AUTH = httpx.Auth()


class AgentAuthProtocolError(Exception):
    """The person server or agent provider refused, or answered something we cannot use; ``error`` is the
    server's code when it sent one."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


class AgentAuthDenied(AgentAuthProtocolError):
    """The person declined (``403 denied``)."""


class AgentAuthTimeout(AgentAuthProtocolError):
    """No decision within the timeout (or the pending request expired)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the agent reads its own tokens' ``exp``, ``iss``, ``ps``)."""
    try:
        payload = token.split(".")[1]
        value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise AgentAuthProtocolError("not a JWT") from exc
    if not isinstance(value, dict):
        raise AgentAuthProtocolError("not a JWT")
    return value


def origin(url: httpx.URL | str) -> str:
    u = httpx.URL(str(url))
    default = {"https": 443, "http": 80}.get(u.scheme)
    port = "" if u.port in (None, default) else f":{u.port}"
    return f"{u.scheme}://{u.host.lower()}{port}"


class AgentKey:
    """The agent's Ed25519 key. Stored as a private JWK in a file only its owner can read (0600)."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self.private_key = private_key
        self.public_jwk: dict[str, str] = public_jwk(private_key)
        self.jkt = jwk_thumbprint(self.public_jwk)

    @classmethod
    def generate(cls) -> AgentKey:
        return cls(Ed25519PrivateKey.generate())

    def private_jwk(self) -> str:
        """The private key as a JWK (JSON text): what the file and keyring stores keep."""
        raw = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return json.dumps({**self.public_jwk, "d": _b64url(raw)})

    @classmethod
    def from_private_jwk(cls, text: str | bytes, where: str = "the key") -> AgentKey:
        """Parse :meth:`private_jwk` output; ValueError unless it is an Ed25519 private JWK."""
        try:
            jwk = json.loads(text)
            if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" \
                    or not isinstance(jwk.get("d"), str):
                raise ValueError
            d = base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4))
            return cls(Ed25519PrivateKey.from_private_bytes(d))
        except ValueError:
            raise ValueError(f"{where} does not hold an Ed25519 private JWK") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically with mode 0600 (never briefly readable by others)."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = self.private_jwk().encode()
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentKey:
        target = Path(path).expanduser()
        if target.stat().st_mode & 0o077:
            raise PermissionError(f"{target} is readable by others; chmod 600 it")
        return cls.from_private_jwk(target.read_bytes(), str(target))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> AgentKey:
        target = Path(path).expanduser()
        if target.exists():
            return cls.load(target)
        key = cls.generate()
        key.save(target)
        return key

    def key_proof(self, agent_id: str, old_jkt: str, now: int) -> str:
        """Proof that this (new) key agrees to replace ``old_jkt`` for ``agent_id`` (agent-token refresh)."""
        header = _b64url(json.dumps({"typ": "aa-key-proof+jwt", "alg": "Ed25519"}).encode())
        payload = _b64url(json.dumps({"sub": agent_id, "jkt": old_jkt, "iat": now}).encode())
        signature = _b64url(self.private_key.sign(f"{header}.{payload}".encode()))
        return f"{header}.{payload}.{signature}"


class KeyStore(Protocol):
    """Where an agent keeps its private key between runs; :class:`AgentAuth` saves a rotated key there."""

    def load(self) -> AgentKey | None:
        """The stored key, or None when there is none yet."""
        ...

    def save(self, key: AgentKey) -> None: ...


class FileKeyStore:
    """The key in a JSON file only its owner can read (0600); see :meth:`AgentKey.save` / :meth:`AgentKey.load`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    def load(self) -> AgentKey | None:
        return AgentKey.load(self.path) if self.path.exists() else None

    def save(self, key: AgentKey) -> None:
        key.save(self.path)

    def load_or_create(self) -> AgentKey:
        return AgentKey.load_or_create(self.path)


class KeyStoreError(Exception):
    """The key store cannot keep or give back the key (no usable OS keyring, a keyring that drops writes)."""


KEYRING_SERVICE = "authgate-agentauth"


class KeyringKeyStore:
    """The key in the OS keyring (macOS Keychain, Windows Credential Locker, the Secret Service on Linux) under
    ``service`` / ``name``, so it never sits in a file. Needs the optional ``keyring`` package (``pip install
    'authgate[keyring]'``), imported on first use so the SDK stays light without it.

    A keyring that cannot store (``keyring``'s ``fail`` backend, a locked or absent Secret Service) raises
    :class:`KeyStoreError`; so does one that accepts a write and then does not give the key back (the ``null``
    backend): silently making a fresh key on every run would orphan the enrolled agent."""

    def __init__(self, name: str, *, service: str = KEYRING_SERVICE) -> None:
        if not name:
            raise ValueError("name the key (for example the agent's name)")
        self.name = name
        self.service = service

    def _keyring(self) -> Any:
        try:
            return importlib.import_module("keyring")
        except ModuleNotFoundError:
            raise KeyStoreError("KeyringKeyStore needs the keyring package: pip install 'authgate[keyring]'") from None

    def _call(self, what: str, fn: Callable[..., Any], *args: str) -> Any:
        errors = importlib.import_module("keyring.errors")
        try:
            return fn(self.service, self.name, *args)
        except errors.KeyringError as exc:
            raise KeyStoreError(f"the OS keyring could not {what} the agent key: {exc}") from exc

    def load(self) -> AgentKey | None:
        text = self._call("read", self._keyring().get_password)
        if text is None:
            return None
        return AgentKey.from_private_jwk(str(text), f"keyring entry {self.service}/{self.name}")

    def save(self, key: AgentKey) -> None:
        text = key.private_jwk()
        keyring = self._keyring()
        self._call("store", keyring.set_password, text)
        if self._call("read", keyring.get_password) != text:
            raise KeyStoreError("the OS keyring did not keep the agent key (is a real backend configured?)")

    def load_or_create(self) -> AgentKey:
        key = self.load()
        if key is None:
            key = AgentKey.generate()
            self.save(key)
        return key

    def delete(self) -> None:
        """Forget the key (after the agent is revoked); nothing happens when there is none."""
        keyring = self._keyring()
        errors = importlib.import_module("keyring.errors")
        try:
            keyring.delete_password(self.service, self.name)
        except errors.PasswordDeleteError:
            pass
        except errors.KeyringError as exc:
            raise KeyStoreError(f"the OS keyring could not delete the agent key: {exc}") from exc


def parse_requirement(value: str) -> dict[str, str]:
    """``AAuth-Requirement`` (an SF Dictionary: ``requirement=auth-token; resource-token="…"``) as a flat dict."""
    out: dict[str, str] = {}
    for m in _REQ_PARAM.finditer(value or ""):
        out[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return out


@dataclass
class _Token:
    value: str
    exp: int
    kind: str  # "agent", "person", "auth"


@dataclass
class _State:
    person: dict[str, _Token] = field(default_factory=dict)
    auth: dict[str, _Token] = field(default_factory=dict)
    ps_meta: dict[str, Any] | None = None


class AgentAuth(httpx.Auth):
    requires_request_body = True

    def __init__(self, key: AgentKey, agent_token: str, *, http: httpx.AsyncClient | None = None,
                 on_interaction: Interaction | None = None, justification: str | None = None,
                 timeout: float = 120.0, prefer_wait: int = 30, refresh_margin: int = 300, max_retries: int = 3,
                 key_file: str | os.PathLike[str] | None = None, clock: Callable[[], float] = time.time,
                 key_store: KeyStore | None = None) -> None:
        self.key = key
        self.http = http or httpx.AsyncClient(timeout=30.0, follow_redirects=False)
        self.on_interaction = on_interaction
        self.justification = justification
        self.timeout = timeout
        self.prefer_wait = prefer_wait
        self.refresh_margin = refresh_margin
        self.max_retries = max_retries
        self.key_file = key_file
        #: Where a rotated key is saved (:class:`FileKeyStore`, :class:`KeyringKeyStore`); ``key_file`` is the
        #: older spelling of ``FileKeyStore(key_file)``.
        self.key_store = key_store
        self.clock = clock
        self._state = _State()
        self._lock = asyncio.Lock()
        self._recent: dict[tuple[str, int], None] = {}
        self._set_agent_token(agent_token)

    def _set_agent_token(self, token: str) -> None:
        claims = claims_of(token)
        self.agent_token = _Token(token, int(claims.get("exp", 0)), "agent")
        self.agent_id: str = str(claims.get("sub", ""))
        self.provider: str = str(claims.get("iss", ""))
        self.person_server: str | None = claims.get("ps") if isinstance(claims.get("ps"), str) else None

    # -- httpx.Auth ----------------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise TypeError("AgentAuth is async-only: use it with httpx.AsyncClient")
        yield request  # pragma: no cover

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        resource = origin(request.url)
        token = await self._token_for(resource)
        self.sign(request, token.value)
        response = yield request
        for _ in range(self.max_retries):
            if response.status_code != 401:
                return
            requirement = parse_requirement(response.headers.get("aauth-requirement", ""))
            sig_error = parse_requirement(response.headers.get("signature-error", "")).get("error")
            if sig_error == "expired_jwt" and token.kind == "agent":
                await self.refresh_agent_token()
                token = self.agent_token
            elif sig_error in ("expired_jwt", "revoked_jwt") and token.kind != "agent":
                self._state.auth.pop(resource, None)
                self._state.person.pop(resource, None)
                token = await self._token_for(resource)
            elif requirement.get("requirement") == "person-token":
                token = await self.person_token(resource)
            elif requirement.get("requirement") == "auth-token" and requirement.get("resource-token"):
                presented = token if token.kind != "agent" else await self.person_token(resource)
                token = await self.auth_token(resource, requirement["resource-token"], presented)
            else:
                return
            self.sign(request, token.value)
            response = yield request

    def sign(self, request: httpx.Request, token: str) -> None:
        """(Re)sign ``request`` presenting ``token``; old signature headers are replaced."""
        for name in SIGNATURE_HEADERS:
            if name in request.headers:
                del request.headers[name]
        covered = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        # Servers refuse a second use of the same signed request (there is no nonce; ``created`` has one-second
        # resolution), so two identical requests in one second would look like a replay: the second one is
        # dated a second later instead (well inside the verifier's window).
        created = int(self.clock())
        fingerprint = hashlib.sha256(b"\0".join([request.method.encode(), str(request.url).encode(),
                                                  request.content, token.encode(),
                                                  *(f"{k}:{v}".encode() for k, v in sorted(covered.items()))])
                                     ).hexdigest()
        while (fingerprint, created) in self._recent:
            created += 1
        self._recent[(fingerprint, created)] = None
        while len(self._recent) > 1024:
            del self._recent[next(iter(self._recent))]
        added = sign_request(method=request.method, url=str(request.url), headers=covered, body=request.content,
                             key=self.key.private_key, signature_key=jwt_scheme(token), created=created)
        request.headers.update(added)

    # -- tokens --------------------------------------------------------------------------------------------

    def _fresh(self, token: _Token | None) -> bool:
        return token is not None and token.exp - self.refresh_margin > self.clock()

    async def _token_for(self, resource: str) -> _Token:
        if not self._fresh(self.agent_token):
            await self.refresh_agent_token()
        for cache in (self._state.auth, self._state.person):
            cached = cache.get(resource)
            if self._fresh(cached):
                assert cached is not None
                return cached
        return self.agent_token

    async def _ps_metadata(self) -> dict[str, Any]:
        if self._state.ps_meta is None:
            if not self.person_server:
                raise AgentAuthProtocolError("the agent token names no person server (ps)")
            meta = await self._get_json(f"{self.person_server}/.well-known/aauth-person.json")
            if meta.get("issuer") != self.person_server:
                raise AgentAuthProtocolError("person server metadata names another issuer", "issuer_mismatch")
            self._state.ps_meta = meta
        return self._state.ps_meta

    async def _get_json(self, url: str) -> dict[str, Any]:
        response = await self.http.get(url, auth=_NO_AUTH)
        if response.status_code != 200:
            raise AgentAuthProtocolError(f"GET {url}: {response.status_code}")
        data = response.json()
        if not isinstance(data, dict):
            raise AgentAuthProtocolError(f"GET {url}: not a JSON object")
        return data

    async def person_token(self, resource: str) -> _Token:
        meta = await self._ps_metadata()
        data = await self._ps_call(str(meta["person_token_endpoint"]), {"resource": resource})
        token = _Token(str(data["person_token"]), int(claims_of(data["person_token"]).get("exp", 0)), "person")
        self._state.person[resource] = token
        return token

    async def auth_token(self, resource: str, resource_token: str, presented: _Token) -> _Token:
        rt = claims_of(resource_token)
        if rt.get("iss") != resource or rt.get("agent_jkt") != self.key.jkt or rt.get("ps") != self.person_server \
                or rt.get("aud") != self.person_server:
            raise AgentAuthProtocolError("the resource token is not for this resource, key or person server")
        meta = await self._ps_metadata()
        body: dict[str, Any] = {"resource_token": resource_token, "presented_token": presented.value,
                                "capabilities": ["interaction"] if self.on_interaction else []}
        if self.justification:
            body["justification"] = self.justification
        data = await self._ps_call(str(meta["auth_token_endpoint"]), body)
        value = str(data["auth_token"])
        claims = claims_of(value)
        if claims.get("aud") != resource or claims.get("cnf", {}).get("jwk", {}).get("x") != self.key.public_jwk["x"]:
            raise AgentAuthProtocolError("the auth token is not for this resource or key")
        token = _Token(value, int(claims.get("exp", 0)), "auth")
        self._state.auth[resource] = token
        return token

    async def _signed(self, method: str, url: str, body: dict[str, Any] | None, extra: dict[str, str] | None = None
                      ) -> httpx.Response:
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        request = self.http.build_request(method, url, content=content or None,
                                          headers={"Content-Type": "application/json"} if content else None)
        if extra:
            request.headers.update(extra)
        self.sign(request, self.agent_token.value)
        return await self.http.send(request, auth=_NO_AUTH)

    async def _ps_call(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the person server; follow a 202 by polling ``Location`` until a terminal answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        sent = loop.time()
        response = await self._signed("POST", url, body, {"Prefer": f"wait={self.prefer_wait}"})
        prompted: set[str] = set()
        polled = False
        while response.status_code == 202:
            location = urljoin(url, response.headers.get("location", ""))
            if origin(location) != origin(url) or urlsplit(location).fragment:
                raise AgentAuthProtocolError("pending Location on another origin")
            requirement = parse_requirement(response.headers.get("aauth-requirement", ""))
            if requirement.get("requirement") == "interaction" and self.on_interaction is not None:
                target, code = requirement.get("url", ""), requirement.get("code", "")
                if code and code not in prompted:
                    prompted.add(code)
                    result = self.on_interaction(f"{target}?code={code}", code)
                    if inspect.isawaitable(result):
                        await result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AgentAuthTimeout("no decision within the timeout", "timeout")
            try:
                pause = float(response.headers.get("retry-after", "0"))
            except ValueError:
                pause = 5.0
            if polled:
                # ``Retry-After: 0`` from a server that does not hold polls must not become a busy loop: at most
                # one poll per MIN_POLL_INTERVAL (a held poll has taken that long already).
                pause = max(pause, MIN_POLL_INTERVAL - (loop.time() - sent))
            if pause > 0:
                await asyncio.sleep(min(pause, remaining))
            # Round the wait up: the last second of the timeout is a held poll too, not a burst of instant ones.
            wait = max(0, min(self.prefer_wait, math.ceil(deadline - loop.time())))
            sent, polled = loop.time(), True
            response = await self._signed("GET", location, None, {"Prefer": f"wait={wait}"} if wait else None)
        data = _json(response)
        if response.status_code == 200:
            return data
        error = str(data.get("error", "")) or parse_requirement(response.headers.get("signature-error", "")).get(
            "error", "")
        if response.status_code == 403 and error in ("denied", "abandoned", "revoked"):
            raise AgentAuthDenied("the person declined", error)
        if response.status_code == 408:
            raise AgentAuthTimeout("the person did not decide in time", error or "expired")
        raise AgentAuthProtocolError(f"{url}: {response.status_code} {error}", error)

    async def refresh_agent_token(self, *, new_key: AgentKey | None = None) -> None:
        """A fresh agent token from our provider (signed with the current key); with ``new_key`` the provider
        binds that key instead (both keys prove possession) and it becomes this agent's key (saved to
        ``key_file`` / ``key_store`` when given). Tokens bound to the old key are dropped."""
        async with self._lock:
            meta = await self._get_json(f"{self.provider}/.well-known/aauth-agent.json")
            if meta.get("issuer") != self.provider or not isinstance(meta.get("agent_token_endpoint"), str):
                raise AgentAuthProtocolError("the agent provider offers no token refresh")
            body: dict[str, Any] = {}
            if new_key is not None:
                body = {"jwk": new_key.public_jwk,
                        "proof": new_key.key_proof(self.agent_id, self.key.jkt, int(self.clock()))}
            response = await self._signed("POST", meta["agent_token_endpoint"], body)
            data = _json(response)
            if response.status_code != 200 or not isinstance(data.get("agent_token"), str):
                raise AgentAuthProtocolError(f"agent token refresh: {response.status_code}", str(data.get("error", "")))
            if new_key is not None:
                self.key = new_key
                if self.key_file is not None:
                    new_key.save(self.key_file)
                if self.key_store is not None:
                    self.key_store.save(new_key)
                self._state = _State()
            self._set_agent_token(data["agent_token"])


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
