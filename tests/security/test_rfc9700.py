"""RFC 9700 (OAuth 2.0 Security BCP) items that no other module tests by name; see docs/threat-model.md for the
full map (items already covered elsewhere are pointed at there, not repeated here).

Each test names its section and fails when the protection is removed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.resource import JWTVerifier, TokenRejected
from tests.conftest import ISSUER
from tests.gateway.test_gateway import Gateway, gw  # noqa: F401 - the gateway fixture
from tests.helpers import REDIRECT, RESOURCE, add_client, authorize_params, pkce_pair, redirect_params

SRC = Path(__file__).resolve().parents[2] / "src" / "authgate"
OTHER_RESOURCE = "http://127.0.0.1:9200/other"


@pytest.fixture
async def dev(settings: Settings, make_client: Callable[..., Any]) -> tuple[ServerContext, httpx.AsyncClient]:
    """A server with auto-approve on, so a valid authorization request answers with a code at once."""
    result: tuple[ServerContext, httpx.AsyncClient] = await make_client(settings, auto_approve=True)
    return result


async def _token_for(http: httpx.AsyncClient, client_id: str, resource: str) -> str:
    verifier, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge,
                                                                            resource=resource)))
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": q["code"],
                                        "redirect_uri": REDIRECT, "code_verifier": verifier,
                                        "client_id": client_id, "resource": resource})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


# -- §2.1.2: implicit grant; §2.4: resource owner password credentials grant ----------------------------------


async def test_rfc9700_2_1_2_implicit_grant_is_absent(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    for response_type in ("token", "id_token token", "code token"):
        r = await http.get("/authorize", params=authorize_params(client_id, challenge, response_type=response_type))
        q = redirect_params(r)
        assert q["error"] == "unsupported_response_type" and "access_token" not in r.headers["location"]
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["response_types_supported"] == ["code"]
    assert "implicit" not in meta["grant_types_supported"]


async def test_rfc9700_2_4_password_grant_is_absent(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                         grant_types=["authorization_code", "password"])
    r = await http.post("/token", data={"grant_type": "password", "username": "alice", "password": "correct horse"},
                        auth=(client_id, secret or ""))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert "password" not in meta["grant_types_supported"]


# -- §2.1.1 / §4.8: PKCE downgrade ---------------------------------------------------------------------------


@pytest.mark.parametrize("change", [{"code_challenge_method": "plain"}, {"code_challenge_method": ""},
                                    {"code_challenge": ""}, {"code_challenge": "", "code_challenge_method": ""}])
async def test_rfc9700_4_8_pkce_downgrade_plain_or_missing_challenge_refused(
        dev: Any, ctx: ServerContext, change: dict[str, str]) -> None:
    """``plain`` (or no challenge at all) is refused at the authorization endpoint, so a code without S256
    binding never exists; a verifier-less redemption is covered by test_pkce_mismatch_and_missing_verifier."""
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, **{k: v for k, v in change.items() if v})
    for key, value in change.items():
        if not value:
            params.pop(key, None)
    if change.get("code_challenge_method") == "plain":
        params["code_challenge"] = "a" * 43  # a plain challenge is the verifier itself
    q = redirect_params(await http.get("/authorize", params=params))
    assert q["error"] == "invalid_request" and "code" not in q
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["code_challenge_methods_supported"] == ["S256"]


# -- §4.1 / §2.1: redirect URI manipulation, exact matching ---------------------------------------------------


@pytest.mark.parametrize("redirect_uri", [
    REDIRECT + "/evil",  # prefix / path extension
    REDIRECT + "x",
    REDIRECT + "/..;/evil",  # keycloak CVE-2026-3872 path trick
    REDIRECT + "/../evil",
    REDIRECT + "?next=https://evil.example/",  # open redirector via an added query
    REDIRECT + "#frag",
    "http://127.0.0.1:3030@evil.example/callback",  # userinfo confusion
    "http://evil.example@127.0.0.1:3030/callback",
    "http://127.0.0.1:3030\\@evil.example/callback",
    "http://127.0.0.1.evil.example:3030/callback",  # suffix tricks
    "HTTP://127.0.0.1:3030/CALLBACK",  # case-changed path
    "http://127.0.0.1:3030/callback/",  # trailing slash
    "http://xn--80ak6aa92e.com/callback",  # IDN homograph host, punycode
    "http://\u0430pple.com/callback",  # IDN homograph host, raw
    "https://127.0.0.1:3030/callback",  # scheme change
    "javascript://127.0.0.1:3030/callback",
])
async def test_rfc9700_4_1_redirect_uri_tricks_get_an_error_page_never_a_redirect(
        dev: Any, ctx: ServerContext, redirect_uri: str) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorize_params(client_id, challenge, redirect_uri=redirect_uri))
    assert r.status_code == 400 and "location" not in r.headers, (redirect_uri, r.status_code)


async def test_rfc9700_4_1_loopback_redirect_port_may_vary_but_nothing_else(dev: Any, ctx: ServerContext) -> None:
    """RFC 8252 §7.3 / RFC 9700 §2.1: any port on a registered loopback redirect, host and path still exact."""
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    ok = await http.get("/authorize", params=authorize_params(client_id, challenge,
                                                             redirect_uri="http://127.0.0.1:49152/callback"))
    assert ok.headers["location"].startswith("http://127.0.0.1:49152/callback?")
    for other in ("http://127.0.0.1:49152/other", "http://127.0.0.2:3030/callback", "http://[::2]:3030/callback"):
        r = await http.get("/authorize", params=authorize_params(client_id, challenge, redirect_uri=other))
        assert r.status_code == 400 and "location" not in r.headers, other


# -- §4.4: mix-up ------------------------------------------------------------------------------------------------


async def test_rfc9700_4_4_mix_up_iss_in_every_authorization_response(dev: Any, ctx: ServerContext) -> None:
    """RFC 9207: ``iss`` on success *and* error responses, byte-equal to the metadata's issuer."""
    _, http = dev
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert meta["issuer"] == ISSUER and meta["authorization_response_iss_parameter_supported"] is True
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    good = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge)))
    bad = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge,
                                                                               scope="nonexistent")))
    assert good["iss"] == meta["issuer"] and "code" in good
    assert bad["iss"] == meta["issuer"] and "error" in bad


# -- §2.3 / §4.10: audience-restricted access tokens ---------------------------------------------------------


async def test_rfc9700_2_3_token_for_one_resource_is_refused_by_another(dev: Any, ctx: ServerContext,
                                                                       clock: FrozenClock) -> None:
    app_ctx, http = dev
    client_id, _ = await add_client(ctx.store)
    token = await _token_for(http, client_id, RESOURCE)
    transport = httpx.ASGITransport(app=create_app(app_ctx))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as as_http:
        mine = JWTVerifier(ISSUER, RESOURCE, http_client=as_http, clock=clock)
        other = JWTVerifier(ISSUER, OTHER_RESOURCE, http_client=as_http, clock=clock)
        assert (await mine.verify(token)).subject
        with pytest.raises(TokenRejected) as err:
            await other.verify(token)
        assert "aud" in str(err.value) or "audience" in str(err.value)


# -- §4.16: clickjacking, §4.2.4: referrer leakage -----------------------------------------------------------


async def test_rfc9700_4_16_every_html_page_forbids_framing_and_referrers(client: httpx.AsyncClient,
                                                                         ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    pages = {
        "consent": await client.get("/authorize", params=authorize_params(client_id, challenge)),
        "error page": await client.get("/authorize", params=authorize_params("nobody", challenge)),
        "sign-in": await client.get("/signin"),
    }
    for name, r in pages.items():
        assert r.headers["content-type"].startswith("text/html"), name
        csp = r.headers.get("content-security-policy", "")
        assert re.search(r"frame-ancestors 'none'", csp), (name, csp)
        assert r.headers.get("x-frame-options") == "DENY", name
        assert r.headers.get("referrer-policy") == "no-referrer", name


# -- §4.7 / §2.1: CSRF on every state-changing form ------------------------------------------------------------

#: Forms that need no CSRF token, and why. Anything else posting must carry the session-derived token.
CSRF_EXEMPT = {
    # The authority is the unguessable single-use link token in the action URL plus the code sent on a
    # second channel; no cookie is involved, so a cross-site post has nothing ambient to ride on.
    "link_code.html",
}


def test_rfc9700_4_7_every_post_form_carries_a_csrf_token() -> None:
    templates = SRC / "web" / "templates"
    forms = 0
    for path in sorted(templates.glob("*.html")):
        text = path.read_text()
        for form in re.findall(r"<form\b[^>]*>.*?</form>", text, flags=re.S | re.I):
            if not re.search(r'method="post"', form, flags=re.I):
                continue
            forms += 1
            if path.name in CSRF_EXEMPT:
                continue
            assert re.search(r'<input type="hidden" name="csrf" value="\{\{ csrf \}\}"', form), path.name
    assert forms >= 4  # consent, sign-in, sign-out, approval decision (+ the exempt link form)


# -- timing-safe comparison of secrets -----------------------------------------------------------------------

#: Names whose equality test would leak a secret byte by byte through timing.
_SECRET_NAME = re.compile(
    r"(secret|password|passwd|_hash$|^hash|digest|(^|_)mac$|hmac|csrf|verifier|challenge|signature|api_key|"
    r"admin_key|nonce|credential|(^|_)rat($|_)|pepper|blind)", re.I)
#: ``==`` on secret-named values that is not a secret comparison (file, expression) → why.
_EQ_ALLOWED = {
    ("agentauth/errors.py", "code == wire.SIG_UNSUPPORTED_SCHEME"): "error code, public",
    ("agentauth/errors.py", "code == wire.SIG_UNSUPPORTED_ALGORITHM"): "error code, public",
    ("dcr/metadata.py", "('code' in types) != wants_code"): "response types, public",
    ("x402/facilitator/service.py", "'0x' + digest.hex() != row.digest"): "EIP-712 digest of a public payload",
    ("x402/facilitator/service.py", "tx_hash != row.tx_hash"): "transaction hash, public on chain",
    ("x402/facilitator/service.py", "reason == e.NONCE_ALREADY_USED"): "reason string, public",
    ("x402/paywall.py", "verdict.invalid_reason == reasons.NONCE_ALREADY_USED"): "reason string, public",
    ("x402/chain/node.py", "tx.nonce != expected"): "account nonce of the dev chain, public",
    ("x402/chain/node.py", "entry.tx_hash == wanted"): "transaction hash, public on chain",
    ("x402/chain/node.py", "entry.tx_hash == tx_hash"): "transaction hash, public on chain",
}
#: Every function that checks a presented secret: each must call hmac/secrets.compare_digest.
_MUST_COMPARE_DIGEST = [
    ("crypto/hashing.py", "verify_token_hash"),  # client secrets, RATs, consent cookies, codes
    ("crypto/hashing.py", "verify_password"),
    ("oauth/pkce.py", "verifier_matches"),
    ("web/session.py", "csrf_ok"),
    ("approvals/links.py", "check_code"),
    ("approvals/channels/webhook.py", "verify_webhook_signature"),
    ("gateway/identity.py", "verify_identity"),
    ("ops/http.py", "metrics"),
    ("gateway/operations.py", "metrics_allowed"),
    ("x402/facilitator/http.py", "authorized"),
    ("agentauth/provider.py", "_enrolment_owner"),
    ("aauth/directory.py", "match"),
    ("crypto/content_digest.py", "verify_content_digest"),
    ("x402/extensions/siwx.py", "check"),
]


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            return node.slice.value
        return _name(node.value)
    if isinstance(node, ast.Call):
        fn = _name(node.func)
        if fn in ("len", "type", "isinstance", "bool", "int"):
            return None
        if fn == "get" and node.args and isinstance(node.args[0], ast.Constant):
            return str(node.args[0].value)
        return fn
    return None


def _is_sql_column(node: ast.AST) -> bool:
    """``t.clients.c.rat_hash``: a database lookup by the hash of a high-entropy token, not a comparison."""
    while isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Attribute) and node.value.attr == "c":
            return True
        if isinstance(node.value, ast.Name) and node.value.id == "c":
            return True
        node = node.value
    return False


def secret_equality_tests(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq | ast.NotEq)):
            continue
        left, right = node.left, node.comparators[0]
        if isinstance(left, ast.Constant) or isinstance(right, ast.Constant):
            continue
        if _is_sql_column(left) or _is_sql_column(right):
            continue
        if any(n and _SECRET_NAME.search(n) for n in (_name(left), _name(right))):
            out.append(ast.unparse(node))
    return out


def test_secret_comparisons_use_no_equality_operator() -> None:
    """RFC 9700 §4.x does not spell it out, the house rules do: secrets compare in constant time."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for expr in secret_equality_tests(ast.parse(path.read_text())):
            if (rel, expr) not in _EQ_ALLOWED:
                found.append(f"{rel}: {expr}")
    assert not found, "use hmac.compare_digest for these (or allow-list them with a reason): " + "; ".join(found)


def test_the_equality_guard_catches_a_naive_comparison() -> None:
    naive = ast.parse("def f(presented, stored_hash):\n    return token_hash(presented) == stored_hash\n")
    assert secret_equality_tests(naive) == ["token_hash(presented) == stored_hash"]


@pytest.mark.parametrize(("module", "function"), _MUST_COMPARE_DIGEST, ids=lambda v: str(v))
def test_secret_checks_call_compare_digest(module: str, function: str) -> None:
    tree = ast.parse((SRC / module).read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and fn.name == function:
            calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                     and n.func.attr == "compare_digest"
                     and isinstance(n.func.value, ast.Name) and n.func.value.id in ("hmac", "secrets")]
            assert calls, f"{module}:{function} must compare with hmac.compare_digest"
            return
    raise AssertionError(f"{module}:{function} not found (renamed? update the list)")


# -- §4.3.2 / RFC 6750 §2.3: bearer tokens in the query string, at the gateway too ------------------------------


async def test_rfc9700_4_3_bearer_token_in_query_refused_at_the_gateway(gw: Gateway) -> None:  # noqa: F811
    """The resource middleware's own test is test_token_in_query_string_is_refused; the policy gateway reuses
    its query check, and must never forward such a request upstream."""
    ok = await gw.http.get("/weather", headers={"Authorization": "Bearer reader"})
    assert ok.status_code == 200  # control: the same token in the header is accepted
    seen = len(gw.upstream.seen)
    for params, headers in (({"access_token": "reader"}, {}),
                            ({"access_token": "reader"}, {"Authorization": "Bearer reader"})):
        r = await gw.http.get("/weather", params=params, headers=headers)
        assert r.status_code == 400, r.text
    assert len(gw.upstream.seen) == seen
