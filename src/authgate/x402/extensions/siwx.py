"""The x402 ``sign-in-with-x`` extension (SIWX) for EVM wallets: a payer who already paid for a resource proves
it is the same wallet with a signature instead of paying again.

Wire (x402 ``specs/extensions/sign-in-with-x.md``; CAIP-122, EVM messages per EIP-4361, EIP-191 signatures):

- server, in ``PAYMENT-REQUIRED``: ``extensions["sign-in-with-x"] = {"info": {domain, uri, version: "1", nonce,
  issuedAt, expirationTime?, statement?, resources?}, "supportedChains": [{"chainId": "eip155:N", "type":
  "eip191"}], "schema": {...}}``;
- client, on the retry: header ``SIGN-IN-WITH-X: base64(JSON{...info, address, chainId, type, signature})``,
  the signature being EIP-191 ``personal_sign`` over the EIP-4361 message built from those fields.

authgate's server side adds two things the wire leaves open: the nonce is an HMAC of ``issuedAt`` and ``uri``
under a server key, so only challenges this server issued are accepted (no state needed to check that), and a
challenge is usable within ``max_age`` seconds of ``issuedAt``. Replay of one signed message is refused by the
paywall's store (a used nonce is remembered until the message could no longer be accepted anyway).

Pure: imported by the paying agent too (standard library and eth-account only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from eth_account import Account
from eth_account.messages import encode_defunct

SIGN_IN_WITH_X = "sign-in-with-x"
HEADER = "SIGN-IN-WITH-X"
#: A header larger than this is refused before decoding.
MAX_HEADER = 8192

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "domain": {"type": "string"}, "address": {"type": "string"}, "statement": {"type": "string"},
        "uri": {"type": "string", "format": "uri"}, "version": {"type": "string"}, "chainId": {"type": "string"},
        "type": {"type": "string"}, "nonce": {"type": "string"},
        "issuedAt": {"type": "string", "format": "date-time"},
        "expirationTime": {"type": "string", "format": "date-time"},
        "notBefore": {"type": "string", "format": "date-time"}, "requestId": {"type": "string"},
        "resources": {"type": "array", "items": {"type": "string", "format": "uri"}},
        "signature": {"type": "string"},
    },
    "required": ["domain", "address", "uri", "version", "chainId", "type", "nonce", "issuedAt", "signature"],
}

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_CHAIN = re.compile(r"^eip155:([0-9]{1,20})$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_STRING_FIELDS = ("domain", "address", "uri", "version", "chainId", "type", "nonce", "issuedAt", "signature",
                  "statement", "expirationTime", "notBefore", "requestId", "signatureScheme")


class SiwxError(ValueError):
    """A SIGN-IN-WITH-X header or challenge is unusable; ``reason`` is the SDK's code (``invalid_siwx_*``)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def iso(ts: float) -> str:
    """RFC 3339 UTC with millisecond precision and ``Z``, as the SDKs write ``issuedAt``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SiwxError("invalid_siwx_issued_at", "not an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def message_text(fields: dict[str, Any]) -> str:
    """The EIP-4361 message for ``fields`` (the payload keys, camelCase), byte-identical to the ``siwe``
    package's ``prepare_message`` that the official SDK signs and verifies with."""
    match = _CHAIN.match(str(fields.get("chainId", "")))
    if match is None:
        raise SiwxError("invalid_siwx_chain_id", "chainId must be eip155:<number>")
    head = f"{fields['domain']} wants you to sign in with your Ethereum account:\n{fields['address']}"
    lines = [f"URI: {fields['uri']}", f"Version: {fields['version']}", f"Chain ID: {int(match.group(1))}",
             f"Nonce: {fields['nonce']}", f"Issued At: {fields['issuedAt']}"]
    if fields.get("expirationTime"):
        lines.append(f"Expiration Time: {fields['expirationTime']}")
    if fields.get("notBefore"):
        lines.append(f"Not Before: {fields['notBefore']}")
    if fields.get("requestId") is not None:
        lines.append(f"Request ID: {fields['requestId']}")
    if fields.get("resources") is not None:
        lines.append("\n".join(["Resources:", *(f"- {r}" for r in fields["resources"])]))
    statement = fields.get("statement")
    head = f"{head}\n\n{statement}" if statement is not None else head + "\n"
    return head + "\n\n" + "\n".join(lines)


# -- client side ---------------------------------------------------------------------------------------------


def sign_header(declaration: dict[str, Any], account: Any, response_url: str) -> str | None:
    """The ``SIGN-IN-WITH-X`` header value answering ``declaration`` (the server's extension entry) with
    ``account`` (an eth-account ``LocalAccount``), or None when the server offers no EVM chain.

    Refuses (:class:`SiwxError`) a challenge whose ``domain``/``uri`` is not the origin that sent the 402: a
    server must not collect sign-ins meant for another site."""
    info = declaration.get("info")
    chains = declaration.get("supportedChains")
    if not isinstance(info, dict) or not isinstance(chains, list):
        return None
    chain = next((c for c in chains if isinstance(c, dict) and c.get("type") == "eip191"
                  and _CHAIN.match(str(c.get("chainId", "")))), None)
    if chain is None:
        return None
    origin = urlsplit(response_url)
    if info.get("domain") != origin.netloc or origin_of(str(info.get("uri", ""))) != origin_of(response_url):
        raise SiwxError("invalid_siwx_domain_mismatch", "the sign-in challenge names another origin")
    fields = {k: v for k, v in info.items() if k in _STRING_FIELDS or k == "resources"}
    fields.update(address=account.address, chainId=chain["chainId"], type="eip191")
    signed = account.sign_message(encode_defunct(text=message_text(fields)))
    fields["signature"] = "0x" + bytes(signed.signature).hex()
    return base64.b64encode(json.dumps(fields, separators=(",", ":")).encode()).decode()


# -- server side ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignIn:
    """A verified sign-in: the wallet ``address`` (checksummed) signed the challenge ``nonce``."""

    address: str
    nonce: str
    expires_at: float


class Challenger:
    """Issues and checks SIWX challenges for one origin. ``key``: secret bytes (at least 32) for the nonces."""

    def __init__(self, origin: str, key: bytes, *, max_age: int = 300, statement: str | None = None) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"SIWX origin must be scheme://host[:port]: {origin!r}")
        if len(key) < 32:
            raise ValueError("SIWX nonce key must be at least 32 bytes")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.domain = parts.netloc
        self._key = key
        self.max_age = max_age
        self.statement = statement

    def _nonce(self, issued_at: str, uri: str) -> str:
        mac = hmac.new(self._key, f"siwx\n{issued_at}\n{uri}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def declare(self, resource_url: str, networks: list[str], now: float) -> dict[str, Any]:
        """A fresh challenge for ``resource_url`` (an URL on this origin), signable on the EVM ``networks``."""
        issued_at = iso(now)
        info: dict[str, Any] = {"domain": self.domain, "uri": resource_url, "version": "1",
                                "nonce": self._nonce(issued_at, resource_url), "issuedAt": issued_at,
                                "expirationTime": iso(now + self.max_age), "resources": [resource_url]}
        if self.statement:
            info["statement"] = self.statement
        chains = [{"chainId": n, "type": "eip191"} for n in dict.fromkeys(networks) if _CHAIN.match(n)]
        return {"info": info, "supportedChains": chains, "schema": SCHEMA}

    def check(self, header: str, resource_url: str, now: float) -> SignIn:
        """Decode, validate and verify a ``SIGN-IN-WITH-X`` header for ``resource_url``; raises
        :class:`SiwxError` (never anything else) when it does not prove a wallet."""
        if len(header) > MAX_HEADER or not _B64.match(header):
            raise SiwxError("invalid_siwx_malformed_signature", "SIGN-IN-WITH-X is not base64")
        try:
            payload = json.loads(base64.b64decode(header, validate=True))
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise SiwxError("invalid_siwx_malformed_signature", "SIGN-IN-WITH-X is not base64 JSON") from exc
        if not isinstance(payload, dict):
            raise SiwxError("invalid_siwx_malformed_signature", "SIGN-IN-WITH-X is not a JSON object")
        for name in SCHEMA["required"]:
            if not isinstance(payload.get(name), str):
                raise SiwxError("invalid_siwx_malformed_signature", f"SIGN-IN-WITH-X lacks {name}")
        for name in _STRING_FIELDS:
            if name in payload and payload[name] is not None and not isinstance(payload[name], str):
                raise SiwxError("invalid_siwx_malformed_signature", f"SIGN-IN-WITH-X {name} is not a string")
        resources = payload.get("resources")
        if resources is not None and not (isinstance(resources, list) and all(isinstance(r, str) for r in resources)):
            raise SiwxError("invalid_siwx_malformed_signature", "SIGN-IN-WITH-X resources is not a list of URIs")
        if payload["domain"] != self.domain:
            raise SiwxError("invalid_siwx_domain_mismatch", "signed for another domain")
        if payload["uri"] != resource_url:
            raise SiwxError("invalid_siwx_uri_mismatch", "signed for another resource")
        if payload["type"] != "eip191" or not _CHAIN.match(payload["chainId"]):
            raise SiwxError("invalid_siwx_unsupported_chain", "only eip155 chains with eip191 signatures")
        if not _ADDRESS.match(payload["address"]):
            raise SiwxError("invalid_siwx_malformed_signature", "address is not an EVM address")
        issued = parse_time(payload["issuedAt"])
        if not hmac.compare_digest(payload["nonce"], self._nonce(payload["issuedAt"], resource_url)):
            raise SiwxError("invalid_siwx_nonce", "this server did not issue that challenge")
        if issued > now + 5:
            raise SiwxError("invalid_siwx_issued_at_in_future", "issuedAt is in the future")
        expires = issued + self.max_age
        if payload.get("expirationTime"):
            expires = min(expires, parse_time(payload["expirationTime"]))
        if now >= expires:
            raise SiwxError("invalid_siwx_expired", "the sign-in challenge has expired")
        if payload.get("notBefore") and now < parse_time(payload["notBefore"]):
            raise SiwxError("invalid_siwx_not_yet_valid", "notBefore is in the future")
        try:
            signature = bytes.fromhex(payload["signature"].removeprefix("0x"))
            recovered = Account.recover_message(encode_defunct(text=message_text(payload)), signature=signature)
        except SiwxError:
            raise
        except Exception as exc:  # eth-keys raises several types for malformed signatures
            raise SiwxError("invalid_siwx_malformed_signature", "signature is not a valid EIP-191 signature") from exc
        if recovered.lower() != payload["address"].lower():
            raise SiwxError("invalid_siwx_signature", "signature does not match the address")
        return SignIn(address=recovered, nonce=payload["nonce"], expires_at=expires)
