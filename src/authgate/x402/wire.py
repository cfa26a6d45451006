"""x402 v2 wire objects and header codecs (spec note §3; coinbase/x402 ``specs/x402-specification-v2.md``).

Every object is a frozen dataclass with ``to_dict``/``to_json`` and ``from_dict``/``from_json``. Serialisation
follows the Python SDK (x402 2.25.0) byte for byte: keys in the SDK's declaration order, ``None`` fields
omitted, compact separators and raw UTF-8 for ``PAYMENT-REQUIRED``/``PAYMENT-SIGNATURE`` and the facilitator
API, ``json.dumps`` default separators (ASCII-escaped) for ``PAYMENT-RESPONSE``. Parsing is bounded (bytes,
list lengths, string lengths) and every failure is one :class:`X402WireError`, so callers map bad input to one
clean 4xx/402 answer.

v1 is understood where a client meets it: a v1 402 body (``maxAmountRequired``, per-offer ``resource``) parses
into the same :class:`PaymentRequired` with ``x402_version == 1``, and :class:`PaymentPayloadV1` is the shape a
client sends back to a v1 server.

Imports only the stdlib (the agent SDK depends on it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authgate.x402.errors import X402WireError

__all__ = [
    "HEADER_PAYMENT_REQUIRED",
    "HEADER_PAYMENT_RESPONSE",
    "HEADER_PAYMENT_SIGNATURE",
    "HEADER_V1_PAYMENT",
    "HEADER_V1_PAYMENT_RESPONSE",
    "MAX_HEADER_BYTES",
    "MAX_JSON_BYTES",
    "FacilitatorRequest",
    "PaymentPayload",
    "PaymentPayloadV1",
    "PaymentRequired",
    "PaymentRequirements",
    "ResourceInfo",
    "SettleResponse",
    "SupportedKind",
    "SupportedResponse",
    "VerifyResponse",
    "X402WireError",
    "b64decode_json",
    "b64encode_json",
    "compact_json",
]

X402_VERSION = 2

HEADER_PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
HEADER_PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
HEADER_PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
HEADER_V1_PAYMENT = "X-PAYMENT"
HEADER_V1_PAYMENT_RESPONSE = "X-PAYMENT-RESPONSE"

#: Upper bound of one decoded JSON document (header or body). A PaymentRequired with a few offers and a bazaar
#: schema is a few KiB; 64 KiB leaves room without letting a peer make us parse megabytes.
MAX_JSON_BYTES = 64 * 1024
#: Upper bound of a base64 header value (4/3 of the JSON bound).
MAX_HEADER_BYTES = (MAX_JSON_BYTES * 4) // 3 + 4
MAX_ACCEPTS = 32
MAX_KINDS = 256
_MAX_STR = 2048
_MAX_SHORT = 256
_AMOUNT = re.compile(r"^[0-9]{1,78}$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")

JSONObject = dict[str, Any]


# --------------------------------------------------------------------------------------------------- codecs


def compact_json(obj: Any) -> str:
    """The SDK's ``model_dump_json`` shape: no spaces, non-ASCII kept as UTF-8."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def b64encode_json(text: str) -> str:
    """Standard padded base64 of UTF-8 text (TS peers reject URL-safe base64 and whitespace)."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def b64decode_json(value: str | bytes) -> Any:
    """Decode a header value into JSON; padding may be missing, the alphabet must be the standard one."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise X402WireError("header is not ASCII") from None
    value = value.strip()
    if not value:
        raise X402WireError("header is empty")
    if len(value) > MAX_HEADER_BYTES:
        raise X402WireError("header too large")
    if not _B64.match(value):
        raise X402WireError("header is not standard base64")
    value += "=" * (-len(value) % 4)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise X402WireError("header is not valid base64") from None
    return loads(raw)


def loads(data: str | bytes) -> Any:
    """Bounded JSON parsing; any failure (size, syntax, encoding, nesting depth) is an X402WireError."""
    if len(data) > MAX_JSON_BYTES:
        raise X402WireError("JSON document too large")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise X402WireError("not valid JSON") from None


def _drop_none(items: list[tuple[str, Any]]) -> JSONObject:
    return {k: v for k, v in items if v is not None}


# --------------------------------------------------------------------------------------------------- readers


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise X402WireError(f"{where} must be a JSON object")
    return value


def _str(d: Mapping[str, Any], key: str, where: str, *, required: bool = True, limit: int = _MAX_STR) -> Any:
    value = d.get(key)
    if value is None:
        if required:
            raise X402WireError(f"{where}.{key} is required")
        return None
    if not isinstance(value, str):
        raise X402WireError(f"{where}.{key} must be a string")
    if len(value) > limit:
        raise X402WireError(f"{where}.{key} is too long")
    return value


def _int(d: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> Any:
    value = d.get(key)
    if value is None:
        if required:
            raise X402WireError(f"{where}.{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise X402WireError(f"{where}.{key} must be a non-negative integer")
    return value


def _bool(d: Mapping[str, Any], key: str, where: str) -> bool:
    value = d.get(key)
    if not isinstance(value, bool):
        raise X402WireError(f"{where}.{key} must be a boolean")
    return value


def _dict(d: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> Any:
    value = d.get(key)
    if value is None:
        if required:
            raise X402WireError(f"{where}.{key} is required")
        return None
    if not isinstance(value, dict):
        raise X402WireError(f"{where}.{key} must be a JSON object")
    return value


def _amount(d: Mapping[str, Any], key: str, where: str) -> str:
    value = _str(d, key, where, limit=80)
    if not _AMOUNT.match(value) or int(value) >= 2**256:
        raise X402WireError(f"{where}.{key} must be a decimal integer string")
    return str(value)


def _version(d: Mapping[str, Any], where: str, allowed: tuple[int, ...] = (1, 2)) -> int:
    version = d.get("x402Version")
    if isinstance(version, bool) or version not in allowed:
        raise X402WireError(f"{where}.x402Version must be one of {allowed}", reason="invalid_x402_version")
    return int(version)


# --------------------------------------------------------------------------------------------------- objects


@dataclass(frozen=True)
class ResourceInfo:
    """What is being paid for. ``url`` is required; the others are optional (bazaar-era fields included)."""

    url: str
    description: str | None = None
    mime_type: str | None = None
    service_name: str | None = None
    tags: tuple[str, ...] | None = None
    icon_url: str | None = None

    def to_dict(self) -> JSONObject:
        return _drop_none([
            ("url", self.url),
            ("description", self.description),
            ("mimeType", self.mime_type),
            ("serviceName", self.service_name),
            ("tags", list(self.tags) if self.tags is not None else None),
            ("iconUrl", self.icon_url),
        ])

    @classmethod
    def from_dict(cls, obj: Any, where: str = "resource") -> ResourceInfo:
        d = _obj(obj, where)
        tags = d.get("tags")
        if tags is not None:
            if not isinstance(tags, list) or len(tags) > 16 or not all(
                isinstance(t, str) and len(t) <= _MAX_SHORT for t in tags
            ):
                raise X402WireError(f"{where}.tags must be a short list of strings")
            tags = tuple(tags)
        return cls(
            url=_str(d, "url", where),
            description=_str(d, "description", where, required=False),
            mime_type=_str(d, "mimeType", where, required=False, limit=_MAX_SHORT),
            service_name=_str(d, "serviceName", where, required=False, limit=_MAX_SHORT),
            tags=tags,
            icon_url=_str(d, "iconUrl", where, required=False),
        )


@dataclass(frozen=True)
class PaymentRequirements:
    """One offer (``accepts[i]``), compared field by field, exact strings, by the resource server."""

    scheme: str
    network: str
    asset: str
    amount: str
    pay_to: str
    max_timeout_seconds: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> JSONObject:
        return {
            "scheme": self.scheme,
            "network": self.network,
            "asset": self.asset,
            "amount": self.amount,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": self.extra,
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def to_v1_dict(self, resource: ResourceInfo | None) -> JSONObject:
        """The v1 offer shape (``maxAmountRequired``, per-offer resource fields) for a v1 402 body."""
        return _drop_none([
            ("scheme", self.scheme),
            ("network", self.network),
            ("maxAmountRequired", self.amount),
            ("resource", resource.url if resource else ""),
            ("description", resource.description if resource else None),
            ("mimeType", resource.mime_type if resource else None),
            ("payTo", self.pay_to),
            ("maxTimeoutSeconds", self.max_timeout_seconds),
            ("asset", self.asset),
            ("extra", self.extra),
        ])

    @classmethod
    def from_dict(cls, obj: Any, where: str = "paymentRequirements", *, v1: bool = False) -> PaymentRequirements:
        d = _obj(obj, where)
        timeout = _int(d, "maxTimeoutSeconds", where)
        if timeout == 0:
            raise X402WireError(f"{where}.maxTimeoutSeconds must be positive")
        return cls(
            scheme=_str(d, "scheme", where, limit=_MAX_SHORT),
            network=_str(d, "network", where, limit=_MAX_SHORT),
            asset=_str(d, "asset", where, limit=_MAX_SHORT),
            amount=_amount(d, "maxAmountRequired" if v1 else "amount", where),
            pay_to=_str(d, "payTo", where, limit=_MAX_SHORT),
            max_timeout_seconds=timeout,
            extra=_dict(d, "extra", where) or {},
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> PaymentRequirements:
        return cls.from_dict(loads(data))


@dataclass(frozen=True)
class PaymentRequired:
    """The server's 402 answer: ``PAYMENT-REQUIRED`` header (v2) or JSON body (v1)."""

    accepts: tuple[PaymentRequirements, ...]
    resource: ResourceInfo | None = None
    error: str | None = None
    extensions: dict[str, Any] | None = None
    x402_version: int = X402_VERSION

    def to_dict(self) -> JSONObject:
        if self.x402_version == 1:
            return _drop_none([
                ("x402Version", 1),
                ("error", self.error),
                ("accepts", [a.to_v1_dict(self.resource) for a in self.accepts]),
            ])
        return _drop_none([
            ("x402Version", self.x402_version),
            ("error", self.error),
            ("resource", self.resource.to_dict() if self.resource else None),
            ("accepts", [a.to_dict() for a in self.accepts]),
            ("extensions", self.extensions),
        ])

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def to_header(self) -> str:
        return b64encode_json(self.to_json())

    @classmethod
    def from_dict(cls, obj: Any) -> PaymentRequired:
        d = _obj(obj, "PaymentRequired")
        version = _version(d, "PaymentRequired")
        accepts = d.get("accepts")
        if not isinstance(accepts, list) or not 1 <= len(accepts) <= MAX_ACCEPTS:
            raise X402WireError(f"PaymentRequired.accepts must be a list of 1 to {MAX_ACCEPTS} offers")
        offers = tuple(
            PaymentRequirements.from_dict(a, f"accepts[{i}]", v1=version == 1) for i, a in enumerate(accepts)
        )
        resource: ResourceInfo | None
        if version == 1:
            first = _obj(accepts[0], "accepts[0]")
            url = _str(first, "resource", "accepts[0]", required=False)
            resource = ResourceInfo(
                url=url or "",
                description=_str(first, "description", "accepts[0]", required=False),
                mime_type=_str(first, "mimeType", "accepts[0]", required=False, limit=_MAX_SHORT),
            )
            extensions = None
        else:
            raw_resource = d.get("resource")
            resource = ResourceInfo.from_dict(raw_resource) if raw_resource is not None else None
            extensions = _dict(d, "extensions", "PaymentRequired")
        return cls(
            accepts=offers,
            resource=resource,
            error=_str(d, "error", "PaymentRequired", required=False),
            extensions=extensions,
            x402_version=version,
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> PaymentRequired:
        return cls.from_dict(loads(data))

    @classmethod
    def from_header(cls, value: str | bytes) -> PaymentRequired:
        return cls.from_dict(b64decode_json(value))


@dataclass(frozen=True)
class PaymentPayload:
    """The client's signed payment (v2): ``PAYMENT-SIGNATURE`` header; ``accepted`` echoes one offer verbatim."""

    payload: dict[str, Any]
    accepted: PaymentRequirements
    resource: ResourceInfo | None = None
    extensions: dict[str, Any] | None = None
    x402_version: int = X402_VERSION

    def to_dict(self) -> JSONObject:
        return _drop_none([
            ("x402Version", self.x402_version),
            ("payload", self.payload),
            ("accepted", self.accepted.to_dict()),
            ("resource", self.resource.to_dict() if self.resource else None),
            ("extensions", self.extensions),
        ])

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def to_header(self) -> str:
        return b64encode_json(self.to_json())

    @classmethod
    def from_dict(cls, obj: Any, where: str = "paymentPayload") -> PaymentPayload:
        d = _obj(obj, where)
        _version(d, where, allowed=(2,))
        raw_resource = d.get("resource")
        return cls(
            payload=_dict(d, "payload", where, required=True),
            accepted=PaymentRequirements.from_dict(d.get("accepted"), f"{where}.accepted"),
            resource=ResourceInfo.from_dict(raw_resource, f"{where}.resource") if raw_resource is not None else None,
            extensions=_dict(d, "extensions", where),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> PaymentPayload:
        return cls.from_dict(loads(data))

    @classmethod
    def from_header(cls, value: str | bytes) -> PaymentPayload:
        return cls.from_dict(b64decode_json(value))


@dataclass(frozen=True)
class PaymentPayloadV1:
    """What a client sends back to a v1 server in ``X-PAYMENT``: scheme and network at the top level."""

    scheme: str
    network: str
    payload: dict[str, Any]
    x402_version: int = 1

    def to_dict(self) -> JSONObject:
        return {"x402Version": 1, "scheme": self.scheme, "network": self.network, "payload": self.payload}

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def to_header(self) -> str:
        return b64encode_json(self.to_json())

    @classmethod
    def from_dict(cls, obj: Any) -> PaymentPayloadV1:
        d = _obj(obj, "paymentPayload")
        _version(d, "paymentPayload", allowed=(1,))
        return cls(
            scheme=_str(d, "scheme", "paymentPayload", limit=_MAX_SHORT),
            network=_str(d, "network", "paymentPayload", limit=_MAX_SHORT),
            payload=_dict(d, "payload", "paymentPayload", required=True),
        )

    @classmethod
    def from_header(cls, value: str | bytes) -> PaymentPayloadV1:
        return cls.from_dict(b64decode_json(value))


@dataclass(frozen=True)
class FacilitatorRequest:
    """Body of ``POST /verify`` and ``POST /settle``: the payload and the server's matching offer."""

    payment_payload: PaymentPayload
    payment_requirements: PaymentRequirements
    x402_version: int = X402_VERSION

    def to_dict(self) -> JSONObject:
        return {
            "x402Version": self.x402_version,
            "paymentPayload": self.payment_payload.to_dict(),
            "paymentRequirements": self.payment_requirements.to_dict(),
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> FacilitatorRequest:
        d = _obj(obj, "request")
        version = _version(d, "request", allowed=(2,))
        return cls(
            payment_payload=PaymentPayload.from_dict(d.get("paymentPayload")),
            payment_requirements=PaymentRequirements.from_dict(d.get("paymentRequirements")),
            x402_version=version,
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> FacilitatorRequest:
        return cls.from_dict(loads(data))


@dataclass(frozen=True)
class VerifyResponse:
    """Answer of ``POST /verify``; always HTTP 200, ``is_valid`` says the verdict."""

    is_valid: bool
    invalid_reason: str | None = None
    invalid_message: str | None = None
    payer: str | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    def to_dict(self) -> JSONObject:
        return _drop_none([
            ("isValid", self.is_valid),
            ("invalidReason", self.invalid_reason),
            ("invalidMessage", self.invalid_message),
            ("payer", self.payer),
            ("extensions", self.extensions),
            ("extra", self.extra),
        ])

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> VerifyResponse:
        d = _obj(obj, "VerifyResponse")
        return cls(
            is_valid=_bool(d, "isValid", "VerifyResponse"),
            invalid_reason=_str(d, "invalidReason", "VerifyResponse", required=False, limit=_MAX_SHORT),
            invalid_message=_str(d, "invalidMessage", "VerifyResponse", required=False),
            payer=_str(d, "payer", "VerifyResponse", required=False, limit=_MAX_SHORT),
            extensions=_dict(d, "extensions", "VerifyResponse"),
            extra=_dict(d, "extra", "VerifyResponse"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> VerifyResponse:
        return cls.from_dict(loads(data))


@dataclass(frozen=True)
class SettleResponse:
    """Answer of ``POST /settle`` and the content of ``PAYMENT-RESPONSE``; ``transaction`` is ``""`` on failure."""

    success: bool
    transaction: str
    network: str
    payer: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    amount: str | None = None
    extensions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    def to_dict(self) -> JSONObject:
        return _drop_none([
            ("success", self.success),
            ("errorReason", self.error_reason),
            ("errorMessage", self.error_message),
            ("payer", self.payer),
            ("transaction", self.transaction),
            ("network", self.network),
            ("amount", self.amount),
            ("extensions", self.extensions),
            ("extra", self.extra),
        ])

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def to_header(self) -> str:
        """``PAYMENT-RESPONSE``: the Python SDK encodes this header with plain ``json.dumps`` (", " / ": ")."""
        return b64encode_json(json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, obj: Any) -> SettleResponse:
        d = _obj(obj, "SettleResponse")
        return cls(
            success=_bool(d, "success", "SettleResponse"),
            transaction=_str(d, "transaction", "SettleResponse", required=False, limit=_MAX_SHORT) or "",
            network=_str(d, "network", "SettleResponse", limit=_MAX_SHORT),
            payer=_str(d, "payer", "SettleResponse", required=False, limit=_MAX_SHORT),
            error_reason=_str(d, "errorReason", "SettleResponse", required=False, limit=_MAX_SHORT),
            error_message=_str(d, "errorMessage", "SettleResponse", required=False),
            amount=_str(d, "amount", "SettleResponse", required=False, limit=80),
            extensions=_dict(d, "extensions", "SettleResponse"),
            extra=_dict(d, "extra", "SettleResponse"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> SettleResponse:
        return cls.from_dict(loads(data))

    @classmethod
    def from_header(cls, value: str | bytes) -> SettleResponse:
        return cls.from_dict(b64decode_json(value))


@dataclass(frozen=True)
class SupportedKind:
    """One ``(x402Version, scheme, network)`` a facilitator serves."""

    x402_version: int
    scheme: str
    network: str
    extra: dict[str, Any] | None = None

    def to_dict(self) -> JSONObject:
        return _drop_none([
            ("x402Version", self.x402_version),
            ("scheme", self.scheme),
            ("network", self.network),
            ("extra", self.extra),
        ])

    @classmethod
    def from_dict(cls, obj: Any) -> SupportedKind:
        d = _obj(obj, "kinds[]")
        return cls(
            x402_version=_version(d, "kinds[]"),
            scheme=_str(d, "scheme", "kinds[]", limit=_MAX_SHORT),
            network=_str(d, "network", "kinds[]", limit=_MAX_SHORT),
            extra=_dict(d, "extra", "kinds[]"),
        )


@dataclass(frozen=True)
class SupportedResponse:
    """Answer of ``GET /supported``: the kinds served, extension keys and signer addresses per CAIP family."""

    kinds: tuple[SupportedKind, ...]
    extensions: tuple[str, ...] = ()
    signers: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> JSONObject:
        return {
            "kinds": [k.to_dict() for k in self.kinds],
            "extensions": list(self.extensions),
            "signers": {k: list(v) for k, v in self.signers.items()},
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    def supports(self, scheme: str, network: str, x402_version: int = X402_VERSION) -> bool:
        return any(
            k.scheme == scheme and k.network == network and k.x402_version == x402_version for k in self.kinds
        )

    @classmethod
    def from_dict(cls, obj: Any) -> SupportedResponse:
        d = _obj(obj, "SupportedResponse")
        kinds = d.get("kinds")
        if not isinstance(kinds, list) or len(kinds) > MAX_KINDS:
            raise X402WireError("SupportedResponse.kinds must be a list")
        exts = d.get("extensions") or []
        if not isinstance(exts, list) or not all(isinstance(e, str) for e in exts):
            raise X402WireError("SupportedResponse.extensions must be a list of strings")
        raw_signers = d.get("signers") or {}
        if not isinstance(raw_signers, dict):
            raise X402WireError("SupportedResponse.signers must be an object")
        signers: dict[str, list[str]] = {}
        for family, addrs in raw_signers.items():
            if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
                raise X402WireError("SupportedResponse.signers values must be lists of strings")
            signers[str(family)] = list(addrs)
        return cls(kinds=tuple(SupportedKind.from_dict(k) for k in kinds), extensions=tuple(exts), signers=signers)

    @classmethod
    def from_json(cls, data: str | bytes) -> SupportedResponse:
        return cls.from_dict(loads(data))
