"""Property-based fuzzing of every parser of ours (issue #9 item 4).

Property 1, for each parser: arbitrary text, bytes or JSON in → a value, or only the parser's documented typed
error out (a ``ValueError`` subclass, ``OAuthError``, ``SignatureError``, ``TokenRejected``, …). Anything else
would surface as a 500 or an unhandled exception in the agent SDK.

Property 2, where we have an encoder: encode → decode is the identity (structured fields, WWW-Authenticate,
AAuth-Requirement, x402 headers, CAIP-2, atomic amounts, normalisers are idempotent).

Each test is bounded (``max_examples`` ≤ 200, no deadline) so the module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import string
from collections.abc import Mapping
from decimal import Decimal, localcontext
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey
from starlette.requests import Request

from authgate.aauth.normalize import KNOWN_ATTRIBUTES, flatten_claims, normalize
from authgate.agent.agentauth import AgentAuthProtocolError, claims_of, parse_requirement
from authgate.agent.challenge import parse_challenges
from authgate.agentauth import tokens as aa_tokens
from authgate.agentauth import wire as aa_wire
from authgate.agentauth.errors import TokenProblem
from authgate.clock import FrozenClock
from authgate.crypto import httpsig, sfv
from authgate.crypto.content_digest import DigestError, content_digest, verify_content_digest
from authgate.crypto.jwk import JWKError, load_public_jwk, public_jwk
from authgate.crypto.signature_key import SignatureKey, SignatureKeyError, labels, parse_signature_key
from authgate.dcr.redirects import check_redirect_uri, check_redirect_uris
from authgate.dcr.software_statement import verify_software_statement
from authgate.errors import OAuthError
from authgate.httputil import parse_unique, read_form, read_json_object
from authgate.resource import JWTVerifier, TokenRejected
from authgate.resource.jwks import KeySourceError, parse_jwks
from authgate.x402 import networks, price, wire
from authgate.x402.errors import NetworkIdError, PriceError, X402WireError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ----------------------------------------------------------------------------------------------

#: Text leaning on the characters the header grammars care about, mixed with anything at all.
_SF_CHARS = string.ascii_letters + string.digits + ' \t,;=:()"\\?*-._/+!#$%&\'^`|~@'
sf_text = st.one_of(st.text(alphabet=_SF_CHARS, max_size=120), st.text(max_size=80))
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(
    max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def b64(text: str | bytes, *, urlsafe: bool = False, pad: bool = True) -> str:
    raw = text.encode() if isinstance(text, str) else text
    out = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return out if pad else out.rstrip("=")


def jws_shaped(header: Any, claims: Any) -> str:
    """A compact JWS with the given header and claims and a junk signature: reaches past the shape checks."""
    h = b64(json.dumps(header), urlsafe=True, pad=False)
    c = b64(json.dumps(claims), urlsafe=True, pad=False)
    return f"{h}.{c}.{b64(b'not a signature', urlsafe=True, pad=False)}"


jwt_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["ES256", "RS256", "Ed25519", "EdDSA", "none", "HS256"]) | json_scalars,
        "typ": st.sampled_from(["at+jwt", "JWT", aa_wire.TYP_AGENT, aa_wire.TYP_AUTH, aa_wire.TYP_RESOURCE])
        | json_scalars,
        "kid": st.sampled_from(["k1", "k2"]) | json_scalars,
        "crit": json_values,
        "jwk": json_values,
    },
)
jwt_claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(["https://as.example", "https://ps.example"]) | json_scalars,
        "aud": st.sampled_from(["https://rs.example/mcp"]) | json_values,
        "exp": st.integers(0, 2**40) | json_scalars,
        "iat": st.integers(0, 2**40) | json_scalars,
        "nbf": json_scalars,
        "sub": json_scalars,
        "jti": json_scalars,
        "scope": json_scalars,
        "client_id": json_scalars,
        "dwk": st.sampled_from(list(aa_wire.TYPE_DWK[aa_wire.TYP_AUTH])) | json_scalars,
        "cnf": json_values,
    },
)
jwt_like = st.one_of(
    st.text(max_size=200),
    st.builds(jws_shaped, jwt_headers, jwt_claims),
    st.builds(jws_shaped, json_values, json_values),
    st.lists(st.text(alphabet=string.ascii_letters + string.digits + "-_=", max_size=30), min_size=1, max_size=5)
    .map(".".join),
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- structured fields (RFC 8941) and the signature headers ---------------------------------------------------

_KEY = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,8}", fullmatch=True)
_TOKEN_S = st.from_regex(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]{0,10}", fullmatch=True).map(sfv.Token)
bare_items = st.one_of(
    st.integers(-(10**15) + 1, 10**15 - 1),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    _TOKEN_S,
    st.binary(max_size=24),
    st.booleans(),
)
params = st.dictionaries(_KEY, bare_items, max_size=3)
members = st.one_of(
    st.tuples(bare_items, params),
    st.tuples(st.lists(st.tuples(bare_items, params), max_size=3), params),
)


def same_item(a: Any, b: Any) -> bool:
    """Equality that tells ``True`` from ``1``, Token from String and bytes from text."""
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(
            same_item(x[0], y[0]) and same_params(x[1], y[1]) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def same_params(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return list(a) == list(b) and all(same_item(a[k], b[k]) for k in a)


@FUZZ
@given(sf_text, st.booleans())
def test_sfv_parsers_raise_only_sfverror(field: str, lenient: bool) -> None:
    for parse in (lambda f: sfv.parse_dictionary(f, lenient_bytes=lenient), sfv.parse_list):
        with contextlib.suppress(sfv.SFVError):
            parse(field)


@FUZZ
@given(st.dictionaries(_KEY, members, max_size=4))
def test_sfv_dictionary_round_trip(dictionary: dict[str, Any]) -> None:
    text = sfv.serialize_dictionary(dictionary)
    parsed = sfv.parse_dictionary(text)
    assert list(parsed) == list(dictionary)
    for key, (value, prms) in dictionary.items():
        got_value, got_params = parsed[key]
        assert same_item(value, got_value), (text, key)
        assert same_params(prms, got_params), (text, key)


@FUZZ
@given(st.lists(st.from_regex(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]{0,10}", fullmatch=True), max_size=5))
def test_sfv_token_list_round_trip(tokens: list[str]) -> None:
    parsed = sfv.parse_list(sfv.serialize_token_list(tokens))
    assert [str(v) for v, _ in parsed] == tokens
    assert all(isinstance(v, sfv.Token) for v, _ in parsed)


@FUZZ
@given(sf_text, st.none() | st.text(max_size=8))
def test_signature_key_parser_raises_only_signature_key_error(header: str, label: str | None) -> None:
    try:
        key = parse_signature_key(header, label)
        assert isinstance(key, SignatureKey) and isinstance(key.scheme, str)
        key.hwk_jwk()
    except SignatureKeyError:
        pass
    with contextlib.suppress(SignatureKeyError):
        labels(header)


@FUZZ
@given(sf_text, st.binary(max_size=64))
def test_content_digest_raises_only_digest_error(header: str, body: bytes) -> None:
    with contextlib.suppress(DigestError):
        verify_content_digest(header, body)


@FUZZ
@given(st.binary(max_size=256), st.sampled_from(["sha-256", "sha-512"]))
def test_content_digest_round_trip(body: bytes, alg: str) -> None:
    assert verify_content_digest(content_digest(body, alg), body) == alg


_SIGNER = Ed25519PrivateKey.generate()
_SIGNER_JWK = public_jwk(_SIGNER)
_NOW = 1_800_000_000


async def _resolve(_: SignatureKey) -> Mapping[str, Any]:
    return _SIGNER_JWK


signature_inputs = st.one_of(
    sf_text,
    st.builds(lambda lbl, comps, tail: f'{lbl}=({" ".join(chr(34) + c + chr(34) for c in comps)}){tail}',
              st.sampled_from(["sig", "sig1", "a"]),
              st.lists(st.sampled_from(["@method", "@authority", "@path", "@query", "signature-key",
                                        "content-digest", "content-type", "@target-uri", "x"]), max_size=6),
              st.sampled_from(["", f";created={_NOW}", f";created={_NOW};alg=\"ed25519\"", ";created=-1",
                               f";created={_NOW};expires=1", ";keyid=\"k\""])),
)


@FUZZ
@given(st.fixed_dictionaries({}, optional={
    "signature": st.one_of(sf_text, st.builds(lambda b: f"sig=:{b64(b)}:", st.binary(max_size=80))),
    "signature-input": signature_inputs,
    "signature-key": st.one_of(sf_text, st.just('sig=jwt;jwt="aaa.bbb.ccc"'),
                               st.just('sig=hwk;kty="OKP";crv="Ed25519";x="AAAA"')),
    "content-digest": sf_text,
    "content-type": st.text(max_size=20),
}), st.sampled_from(["GET", "POST"]), st.text(max_size=30), st.none() | st.text(max_size=20),
    st.binary(max_size=20))
def test_signed_request_verification_raises_only_signature_error(
        headers: dict[str, str], method: str, path: str, query: str | None, body: bytes) -> None:
    async def go() -> None:
        await httpsig.verify_request(
            method=method, authority="api.example", path="/" + path, query=query, headers=headers, body=body,
            now=_NOW, resolve_key=_resolve, replay=None, schemes=("jwt", "hwk"))

    with contextlib.suppress(httpsig.SignatureError):
        run(go())


def test_signed_request_round_trip() -> None:
    """The encoder's output verifies (the fuzz property above would pass vacuously if nothing ever did)."""
    from authgate.crypto.signature_key import jwt_scheme

    hdrs = httpsig.sign_request(method="POST", url="https://api.example/v1/x?q=1", headers={},
                                body=b'{"a":1}', key=_SIGNER, created=_NOW, signature_key=jwt_scheme("a.b.c"))
    verified = run(httpsig.verify_request(
        method="POST", authority="api.example", path="/v1/x", query="q=1", headers=hdrs, body=b'{"a":1}',
        now=_NOW + 1, resolve_key=_resolve, replay=None))
    assert verified.key_thumbprint


@FUZZ
@given(json_values)
def test_public_jwk_loader_raises_only_jwk_error(jwk: Any) -> None:
    with contextlib.suppress(JWKError):
        load_public_jwk(jwk if isinstance(jwk, dict) else {"kty": jwk}, allow_eddsa=True)


# -- AAuth-Requirement (Agent Auth) --------------------------------------------------------------------------


@FUZZ
@given(sf_text)
def test_aauth_requirement_parser_never_raises(value: str) -> None:
    out = parse_requirement(value)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in out.items())


@FUZZ
@given(st.sampled_from([aa_wire.REQ_AGENT_TOKEN, aa_wire.REQ_AUTH_TOKEN, aa_wire.REQ_INTERACTION,
                        aa_wire.REQ_APPROVAL, aa_wire.REQ_PERSON_TOKEN]),
       st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda n: n != "requirement"),
                       st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                                      exclude_characters='"\\'), max_size=40), max_size=4))
def test_aauth_requirement_round_trip(requirement: str, prms: dict[str, str]) -> None:
    header = aa_wire.requirement_header(requirement, **prms)
    parsed = parse_requirement(header)
    assert parsed.pop("requirement") == requirement
    assert parsed == {k.replace("_", "-"): v for k, v in prms.items()}


@FUZZ
@given(jwt_like)
def test_agent_sdk_claims_reader_raises_only_protocol_error(token: str) -> None:
    with contextlib.suppress(AgentAuthProtocolError):
        assert isinstance(claims_of(token), dict)


# -- WWW-Authenticate (agent SDK) -----------------------------------------------------------------------------


@FUZZ
@given(st.lists(sf_text, max_size=3))
def test_www_authenticate_parser_never_raises(values: list[str]) -> None:
    for ch in parse_challenges(values):
        assert ch.scheme == ch.scheme.lower()
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in ch.params.items())


_TCHAR_NAME = st.from_regex(r"[a-z][a-z0-9_\-]{0,10}", fullmatch=True)
_QUOTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t"), max_size=30)


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@FUZZ
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,8}", fullmatch=True),
                          st.dictionaries(_TCHAR_NAME, _QUOTABLE, min_size=1, max_size=4)), min_size=1, max_size=3))
def test_www_authenticate_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    header = ", ".join(f"{scheme} " + ", ".join(f"{k}={quote(v)}" for k, v in prms.items())
                       for scheme, prms in challenges)
    parsed = parse_challenges([header])
    assert [(c.scheme, c.params, c.token68) for c in parsed] == [
        (scheme.lower(), prms, None) for scheme, prms in challenges]


# -- x402 PAYMENT-* headers, CAIP-2, prices ------------------------------------------------------------------

header_values = st.one_of(
    st.text(max_size=120),
    st.binary(max_size=80),
    json_values.map(lambda v: b64(json.dumps(v))),
    json_values.map(lambda v: b64(json.dumps(v), pad=False)),
    json_values.map(lambda v: b64(json.dumps(v), urlsafe=True)),
)
_offer_dicts = st.fixed_dictionaries(
    {"scheme": st.sampled_from(["exact"]) | json_scalars, "network": st.sampled_from(["eip155:84532"]) | json_scalars,
     "asset": st.text(max_size=10) | json_scalars, "payTo": st.text(max_size=10) | json_scalars,
     "maxTimeoutSeconds": st.integers(-1, 2**64) | json_scalars},
    optional={"amount": st.from_regex(r"[0-9]{1,80}", fullmatch=True) | json_scalars,
              "maxAmountRequired": st.from_regex(r"[0-9]{1,5}", fullmatch=True) | json_scalars,
              "extra": json_values},
)
x402_docs = st.one_of(
    json_values,
    st.fixed_dictionaries({"x402Version": st.sampled_from([1, 2, True, "2", 3])},
                          optional={"accepts": st.lists(_offer_dicts | json_values, max_size=3),
                                    "accepted": _offer_dicts | json_values, "payload": json_values,
                                    "resource": json_values, "extensions": json_values, "error": json_values,
                                    "scheme": json_scalars, "network": json_scalars, "success": json_scalars,
                                    "transaction": json_scalars, "payer": json_scalars,
                                    "paymentPayload": json_values, "paymentRequirements": json_values,
                                    "isValid": json_scalars, "kinds": json_values}),
)


@FUZZ
@given(header_values)
def test_x402_header_decoders_raise_only_wire_error(value: str | bytes) -> None:
    for decode in (wire.PaymentRequired.from_header, wire.PaymentPayload.from_header,
                   wire.PaymentPayloadV1.from_header, wire.SettleResponse.from_header, wire.b64decode_json):
        with contextlib.suppress(X402WireError):
            decode(value)


@FUZZ
@given(x402_docs)
def test_x402_object_readers_raise_only_wire_error(doc: Any) -> None:
    readers = (wire.PaymentRequired.from_dict, wire.PaymentPayload.from_dict, wire.PaymentPayloadV1.from_dict,
               wire.PaymentRequirements.from_dict, wire.ResourceInfo.from_dict, wire.FacilitatorRequest.from_dict,
               wire.VerifyResponse.from_dict, wire.SettleResponse.from_dict, wire.SupportedKind.from_dict,
               wire.SupportedResponse.from_dict)
    for read in readers:
        with contextlib.suppress(X402WireError):
            read(doc)
    for read_json in (wire.PaymentRequired.from_json, wire.FacilitatorRequest.from_json,
                      wire.VerifyResponse.from_json):
        with contextlib.suppress(X402WireError):
            read_json(json.dumps(doc))


_short = st.text(max_size=30)
requirements = st.builds(
    wire.PaymentRequirements,
    scheme=st.text(max_size=10), network=st.text(max_size=20), asset=_short,
    amount=st.integers(0, 2**256 - 1).map(str), pay_to=_short, max_timeout_seconds=st.integers(1, 2**62),
    extra=st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
)
resources = st.none() | st.builds(wire.ResourceInfo, url=_short, description=st.none() | _short,
                                  mime_type=st.none() | _short, service_name=st.none() | _short,
                                  tags=st.none() | st.lists(_short, max_size=3).map(tuple),
                                  icon_url=st.none() | _short)


@FUZZ
@given(st.lists(requirements, min_size=1, max_size=3).map(tuple), resources, st.none() | _short,
       st.none() | st.dictionaries(st.text(max_size=8), json_scalars, max_size=3))
def test_x402_payment_required_round_trip(accepts: tuple[wire.PaymentRequirements, ...],
                                          resource: wire.ResourceInfo | None, error: str | None,
                                          extensions: dict[str, Any] | None) -> None:
    pr = wire.PaymentRequired(accepts=accepts, resource=resource, error=error, extensions=extensions)
    assert wire.PaymentRequired.from_header(pr.to_header()) == pr


@FUZZ
@given(requirements, resources, st.dictionaries(st.text(max_size=8), json_scalars, max_size=4))
def test_x402_payment_signature_round_trip(accepted: wire.PaymentRequirements, resource: wire.ResourceInfo | None,
                                           payload: dict[str, Any]) -> None:
    pp = wire.PaymentPayload(payload=payload, accepted=accepted, resource=resource)
    assert wire.PaymentPayload.from_header(pp.to_header()) == pp


@FUZZ
@given(st.builds(wire.SettleResponse, success=st.booleans(), transaction=_short, network=_short,
                 payer=st.none() | _short, error_reason=st.none() | _short))
def test_x402_payment_response_round_trip(response: wire.SettleResponse) -> None:
    assert wire.SettleResponse.from_header(response.to_header()) == response


_caip2_like = st.from_regex(r"[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}", fullmatch=True)
network_values = st.one_of(
    st.text(max_size=40), _caip2_like, st.sampled_from(list(networks.V1_NETWORK_CHAIN_IDS)),
    _caip2_like.map(lambda n: n + "\n"), st.integers(0, 9).map(lambda d: f"eip155:{chr(0x0660 + d)}"),
    json_values,
)


@FUZZ
@given(network_values, st.none() | st.text(max_size=6) | json_scalars)
def test_caip2_parsers_raise_only_network_id_error(network: Any, symbol: Any) -> None:
    for parse in (networks.parse_caip2, networks.evm_chain_id, networks.normalize_network, networks.default_asset,
                  lambda n: networks.default_asset(n, symbol)):
        try:
            parse(network)
        except NetworkIdError as exc:
            assert isinstance(exc, ValueError)  # callers that catch ValueError keep working
    with contextlib.suppress(NetworkIdError):  # what parses is exactly what was given (no trailing newline)
        namespace, reference = networks.parse_caip2(network)
        assert f"{namespace}:{reference}" == network
    networks.v1_name(network)
    networks.find_asset(network, "0x0")
    networks.find_asset(network, symbol)


@FUZZ
@given(st.from_regex(r"[-a-z0-9]{3,8}", fullmatch=True), st.from_regex(r"[-_a-zA-Z0-9]{1,32}", fullmatch=True))
def test_caip2_round_trip(namespace: str, reference: str) -> None:
    assert networks.parse_caip2(f"{namespace}:{reference}") == (namespace, reference)
    assert networks.normalize_network(f"{namespace}:{reference}") == f"{namespace}:{reference}"


@FUZZ
@given(st.integers(1, 2**63 - 1))
def test_evm_chain_id_round_trip(chain_id: int) -> None:
    assert networks.evm_chain_id(f"eip155:{chain_id}") == chain_id


_money_like = st.from_regex(r"\$?\s?[0-9]{1,8}(\.[0-9]{0,8})?( (USD|USDC|EURC|XYZ))?", fullmatch=True)
prices = st.one_of(
    st.text(max_size=40),
    _money_like,
    _money_like.map(lambda m: m + "\n"),
    st.text(alphabet="0123456789.$\u0660\u0663\u06f5\u0966\uff11\u00b2", min_size=1, max_size=8),
    st.integers(-5, 10**12), st.integers(2**250, 2**20000), st.floats(), st.booleans(),
    st.builds(price.AssetAmount, amount=st.text(max_size=5), asset=st.text(max_size=5)),
    st.dictionaries(st.sampled_from(["amount", "asset", "extra"]), json_values, max_size=3),
    json_values,
)


@FUZZ
@given(prices, st.sampled_from(["eip155:84532", "eip155:8453", "base-sepolia", "solana:xyz", "nope", ""]))
def test_price_parser_raises_only_price_or_network_id_error(value: Any, network: str) -> None:
    try:
        parsed = price.parse_price(value, network)
    except (PriceError, NetworkIdError) as exc:
        assert isinstance(exc, ValueError)
        return
    if not isinstance(value, price.AssetAmount):  # passed through as given
        assert parsed.amount.isascii() and parsed.amount.isdigit(), parsed


@FUZZ
@given(st.from_regex(r"[0-9]{1,20}(\.[0-9]{0,20})?", fullmatch=True), st.integers(0, 30))
def test_to_atomic_truncates_toward_zero(amount: str, decimals: int) -> None:
    with localcontext() as exact:
        exact.prec = 100  # the default 28 digits would round the reference itself
        expected = int((Decimal(amount) * (Decimal(10) ** decimals)).to_integral_value(rounding="ROUND_DOWN"))
    assert price.to_atomic(amount, decimals) == str(expected)


@FUZZ
@given(st.text(max_size=40) | st.text(alphabet="0123456789.\n\u0663\u00b2", max_size=10) | json_scalars)
def test_to_atomic_raises_only_price_error(amount: Any) -> None:
    with contextlib.suppress(PriceError):
        atomic = price.to_atomic(amount, 6)
        assert atomic.isascii() and atomic.isdigit(), atomic


# -- form / JSON readers (httputil) -----------------------------------------------------------------------------


def _request(body: bytes, content_type: str) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "raw_path": b"/", "query_string": b"",
             "headers": [(b"content-type", content_type.encode("latin-1")),
                         (b"content-length", str(len(body)).encode())]}
    return Request(scope, receive)


bodies = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet=string.ascii_letters + "=&%+;\x00\u00e9", max_size=80).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 60).map(lambda depth: b"[" * depth * 20 + b"]" * depth * 20),
)
content_types = st.sampled_from(["application/x-www-form-urlencoded", "application/json", "text/plain",
                                 "application/json; charset=latin-1", "application/x-www-form-urlencoded; x=1",
                                 ""])


@FUZZ
@given(bodies, content_types)
def test_form_and_json_readers_raise_only_oauth_errors(body: bytes, content_type: str) -> None:
    async def go() -> None:
        for read in (read_form, read_json_object):
            try:
                out = await read(_request(body, content_type), 1024)
                assert isinstance(out, dict)
            except OAuthError:
                pass

    run(go())


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "client_id"]), st.text(max_size=10)), max_size=5))
def test_parse_unique_refuses_repeats_with_oauth_error(pairs: list[tuple[str, str]]) -> None:
    try:
        out = parse_unique(pairs, "form")
        assert len(out) == len(pairs)
    except OAuthError:
        assert len({k for k, _ in pairs}) < len(pairs)


# -- redirect URIs, software statements (DCR) --------------------------------------------------------------------

uris = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s, h, p: f"{s}://{h}{p}",
              st.sampled_from(["https", "http", "HTTP", "JavaScript", "data", "com.example.app", "myapp", "file"]),
              st.sampled_from(["127.0.0.1", "localhost", "[::1]", "example.com", "a@b", "127.0.0.1:80@evil.test",
                               "localhost.evil.test", "xn--e1afmkfd.example", "\u0430pple.com", "", "[::1",
                               "host:99999", "127.0.0.1:0"]),
              st.sampled_from(["", "/", "/cb", "/cb#", "/cb#x", "/..;/x", "/cb?x=1", " /cb", "/c\\b"])),
    json_values,
)


@FUZZ
@given(uris)
def test_redirect_uri_check_raises_only_oauth_error(uri: Any) -> None:
    try:
        out = check_redirect_uri(uri)
    except OAuthError:
        return
    assert out == uri and "#" not in out and out.isascii()
    scheme = out.split(":", 1)[0].lower()
    assert scheme not in ("javascript", "data", "file")
    if scheme in ("http", "https"):
        assert "@" not in out.split("/")[2]
    try:
        check_redirect_uris([uri], required=True)
    except OAuthError as exc:  # pragma: no cover - accepted alone must be accepted in a list
        raise AssertionError("check_redirect_uris refused what check_redirect_uri accepts") from exc


_ISSUER_KEY = ECKey.generate_key("P-256", parameters={"kid": "pub", "alg": "ES256"}, private=True)
_TRUSTED = {"https://publisher.example": {"keys": [dict(_ISSUER_KEY.as_dict(private=False))]}}


@FUZZ
@given(jwt_like | json_values)
def test_software_statement_raises_only_oauth_error(statement: Any) -> None:
    with contextlib.suppress(OAuthError):
        verify_software_statement(statement, _TRUSTED, _NOW)


# -- JWT entry points: the resource verifier and Agent Auth tokens ---------------------------------------------

_AS_KEY = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"}, private=True)


def _jwks(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"keys": [dict(_AS_KEY.as_dict(private=False))]})


@SMALL
@given(st.lists(jwt_like, min_size=1, max_size=8))
def test_resource_verifier_raises_only_token_rejected(tokens: list[str]) -> None:
    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(_jwks)) as http:
            verifier = JWTVerifier("https://as.example", "https://rs.example/mcp",
                                   jwks_uri="https://as.example/jwks.json", http_client=http,
                                   clock=FrozenClock(_NOW))
            for token in tokens:
                with contextlib.suppress(TokenRejected):
                    await verifier.verify(token)

    run(go())


@FUZZ
@given(json_values)
def test_jwks_parser_raises_only_key_source_error(doc: Any) -> None:
    for candidate in (doc, {"keys": doc if isinstance(doc, list) else [doc]}):
        with contextlib.suppress(KeySourceError):
            parse_jwks(candidate)


_AA_KEY = aa_tokens.import_public_jwk(public_jwk(_SIGNER) | {"alg": "Ed25519"})


async def _aa_resolve(iss: str, dwk: str, kid: str | None) -> Any:
    return _AA_KEY


@FUZZ
@given(jwt_like | json_values, st.sampled_from([(aa_wire.TYP_AGENT,), (aa_wire.TYP_AUTH,), (aa_wire.TYP_RESOURCE,),
                                                 tuple(aa_wire.TYPE_DWK)]))
def test_agentauth_token_verifier_raises_only_token_problem(token: Any, types: tuple[str, ...]) -> None:
    with contextlib.suppress(TokenProblem):
        run(aa_tokens.verify_token(token, types=types, resolve=_aa_resolve, now=_NOW))
    with contextlib.suppress(TokenProblem):
        aa_tokens.import_public_jwk(token)


# -- Rosenberg AAuth normalisers --------------------------------------------------------------------------------

attribute_values = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"(\+|00)?[0-9 ().\-/]{4,20}", fullmatch=True),
    st.from_regex(r"[0-9]{1,4}[-/. ][0-9]{1,2}[-/. ][0-9]{1,4}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9.+_\- ]{1,10}@[A-Za-z0-9.\-\u00e9]{1,12}\.?", fullmatch=True),
    st.from_regex(r"[0-9]{1,2} (jan|feb|march|sept|dec)[a-z]{0,3},? [0-9]{4}", fullmatch=True),
)
attribute_names = st.sampled_from([*KNOWN_ATTRIBUTES, "tenant_key", "Bad", "", "x" * 40])


@FUZZ
@given(attribute_names, attribute_values, st.sampled_from(["", "1", "44", "x"]), st.sampled_from(["", "mdy", "dmy"]))
def test_normalize_raises_only_value_error_and_is_idempotent(name: str, value: str, cc: str, order: str) -> None:
    try:
        once = normalize(name, value, default_country_code=cc, date_order=order)
    except ValueError:
        return
    assert normalize(name, once, default_country_code=cc, date_order=order) == once


@FUZZ
@given(json_values | st.dictionaries(st.sampled_from([*KNOWN_ATTRIBUTES, "address", "Bad"]), json_values,
                                     max_size=5))
def test_flatten_claims_raises_only_value_error(claims: Any) -> None:
    try:
        flat = flatten_claims(claims)
    except ValueError:
        return
    assert all(isinstance(v, str) for v in flat.values())
