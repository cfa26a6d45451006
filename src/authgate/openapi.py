"""The OpenAPI 3.1 description of the server's HTTP endpoints, served at ``/openapi.json``.

Written by hand from the routes :func:`authgate.app.create_app` builds, and generated from the same
:class:`Settings`, so the document a server publishes describes the routes that server has.

**What is described.** Every endpoint a program calls, whatever it speaks (JSON, form-encoded bodies,
``application/problem+json``, server-sent events, Prometheus text), with its methods, parameters, request body,
every status code it answers with and the body of each, errors included. Errors come in three shapes:

* OAuth error JSON ``{"error", "error_description"}`` (RFC 6749 §5.2, schema ``OAuthError``): the OAuth and
  registration endpoints, ``/approvals/{id}/status`` and ``/events``, ``/metrics`` and the x402 facilitator;
* ``application/problem+json`` ``{"error", "detail"}`` (schema ``Problem``): the Agent Auth endpoints, where a
  refused HTTP signature is a ``401`` with a ``Signature-Error`` header (and ``type``/``status`` in the body);
* HTML pages: the pages below.

Pages that a protocol flow sends a person to (``/authorize``, ``/signin``, ``/signout``, ``/approvals…``,
one-time approval links, ``/trust/mandates…``, ``/agentauth/interaction``) are described as ``text/html`` (or a
redirect) with their status codes and no more: they are not an API, but programs link to them.

Settings decide which parts appear, exactly as they decide which routes exist: ``metrics_enabled``
(``/metrics``; ``metrics_token`` adds its bearer token), ``agentauth_enabled`` (the agent provider and person
server: ``/.well-known/aauth-*.json`` and ``/agentauth/…``), ``x402_facilitator`` (``/x402/verify``,
``/x402/settle``, ``/x402/supported``; ``x402_facilitator_token`` adds its bearer token), ``registration`` (what
``POST /register`` can answer: ``closed`` leaves only ``403``, RFC 7592 management keeps working) and
``approvals_link_requires_code`` (whether a link's code form is served).

Every parameter is bounded so that any documented request fits the HTTP server's request head: uvicorn (on
httptools) refuses a head over 64 KiB with a plain-text ``400`` before the app sees it, which is no answer of any
operation. URI-like query parameters are printable ASCII (nothing else can be valid there).

**What is left out, on purpose.**

* The operator dashboard (``/admin``, ``/admin/…``) and the person's own page (``/me``, ``/me/…``), served when
  ``dashboard_enabled``: web UIs behind their own sign-in that no protocol sends anyone to; docs/dashboard.md
  describes them.
* ``HEAD`` (Starlette answers it for every ``GET``) and the methods a path does not serve: every such request
  is answered ``405`` with ``Allow`` (OAuth error JSON; ``/register`` and ``/register/{client_id}`` take every
  method into their handlers to answer so).
* The route-policy gateway (``gateway_config``): it answers the paths no server route does, with the operator's
  upstreams behind them.

tests/fuzz/test_openapi_document.py holds this document to the app's routes in both directions, and
tests/fuzz/test_openapi_schemathesis.py runs schemathesis against a live server with every optional part on,
checking every response (status, content type, documented headers, body schema) against it.
"""

from __future__ import annotations

from typing import Any

from authgate.config import Settings
from authgate.oauth.metadata import CLIENT_AUTH_METHODS, GRANT_TYPES

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"
TEXT = "text/plain"
EVENT_STREAM = "text/event-stream"

_STRING: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_FORM_STRING: dict[str, Any] = {"type": "string", "maxLength": 4096}
_HEX_ADDRESS: dict[str, Any] = {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}
_UINT_STRING: dict[str, Any] = {"type": "string", "pattern": "^[0-9]{1,78}$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(required: bool = True, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"required": required, "schema": _STRING}
    if description:
        out["description"] = description
    return out


def _json(schema: dict[str, Any], description: str, *, headers: dict[str, Any] | None = None,
          media: str = JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": _STRING}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT: {"schema": _STRING}}}


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("OAuthError"), description, headers=headers)


def _problem(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Problem"), description, headers=headers, media=PROBLEM_JSON)


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"Location": _header()}}


def _retry_after(description: str) -> dict[str, Any]:
    return _error(description, headers={"Retry-After": _header()})


def _form(fields: tuple[str, ...], required: tuple[str, ...] = (), **special: dict[str, Any]) -> dict[str, Any]:
    """A form-encoded body: every field a string (``special``: a narrower schema for some); a field may appear
    once."""
    properties = {name: special.get(name, _FORM_STRING) for name in fields}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {FORM: {"schema": schema}}}


def _page_form(fields: tuple[str, ...]) -> dict[str, Any]:
    """A form a page posts (CSRF token included); the server reads it whatever the browser sent."""
    return {"content": {FORM: {"schema": {"type": "object", "properties": {n: _FORM_STRING for n in fields}}}}}


def _ascii(max_length: int) -> dict[str, Any]:
    """A URI-like value: printable ASCII only (what the server can accept there at all), bounded."""
    return {"type": "string", "pattern": "^[!-~]*$", "maxLength": max_length}


def _path_param(name: str, max_length: int = 200) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": max_length}}]


_OBJECT: dict[str, Any] = {"type": "object"}

SCHEMAS: dict[str, Any] = {
    "OAuthError": {
        "type": "object", "required": ["error"], "description": "RFC 6749 §5.2 error (some add members: interval)",
        "properties": {"error": _STRING, "error_description": _STRING, "error_uri": _STRING},
    },
    "Problem": {
        "type": "object", "required": ["error"],
        "description": "Agent Auth error (application/problem+json); signature errors add type and status",
        "properties": {"error": _STRING, "detail": _STRING, "type": _STRING, "status": _INT},
    },
    "TokenResponse": {
        "type": "object", "required": ["access_token", "token_type"],
        "properties": {"access_token": _STRING, "token_type": _STRING, "expires_in": _INT,
                       "refresh_token": _STRING, "scope": _STRING, "issued_token_type": _STRING},
    },
    "ServerMetadata": {
        "type": "object", "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"],
        "properties": {"issuer": _STRING, "authorization_endpoint": _STRING, "token_endpoint": _STRING,
                       "jwks_uri": _STRING, "registration_endpoint": _STRING, "revocation_endpoint": _STRING,
                       "introspection_endpoint": _STRING, "backchannel_authentication_endpoint": _STRING,
                       "grant_types_supported": {"type": "array", "items": _STRING},
                       "scopes_supported": {"type": "array", "items": _STRING}},
    },
    "JWKS": {"type": "object", "required": ["keys"],
             "properties": {"keys": {"type": "array", "items": _OBJECT}}},
    "OpenAPIDocument": {"type": "object", "required": ["openapi", "info", "paths"],
                        "properties": {"openapi": _STRING, "info": _OBJECT, "paths": _OBJECT}},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Readiness": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"enum": ["ready", "not ready"]},
                       "problems": {"type": "array", "items": _STRING}},
    },
    "ClientMetadata": {
        "type": "object", "description": "RFC 7591 client metadata (RFC 7592 updates add client_id, client_secret)",
        "properties": {"redirect_uris": {"type": "array", "items": _STRING}, "client_name": _STRING,
                       "grant_types": {"type": "array", "items": {"enum": GRANT_TYPES}},
                       "response_types": {"type": "array", "items": {"const": "code"}},
                       "token_endpoint_auth_method": {"enum": CLIENT_AUTH_METHODS},
                       "application_type": {"enum": ["web", "native"]}, "scope": _STRING, "jwks_uri": _STRING,
                       "jwks": _OBJECT, "software_statement": _STRING, "software_id": _STRING,
                       "software_version": _STRING, "client_uri": _STRING, "logo_uri": _STRING,
                       "contacts": {"type": "array", "items": _STRING}, "client_id": _STRING,
                       "client_secret": _STRING},
    },
    "ClientInformation": {
        "type": "object", "required": ["client_id", "client_id_issued_at"],
        "properties": {"client_id": _STRING, "client_secret": _STRING, "client_id_issued_at": _INT,
                       "client_secret_expires_at": _INT, "registration_access_token": _STRING,
                       "registration_client_uri": _STRING, "redirect_uris": {"type": "array", "items": _STRING},
                       "grant_types": {"type": "array", "items": _STRING},
                       "token_endpoint_auth_method": _STRING},
    },
    "Introspection": {
        "type": "object", "required": ["active"],
        "properties": {"active": {"type": "boolean"}, "scope": _STRING, "client_id": _STRING, "sub": _STRING,
                       "exp": _INT, "iat": _INT, "aud": {}, "iss": _STRING, "token_type": _STRING},
    },
    "Revocation": {"type": "object", "maxProperties": 0, "description": "an empty object (RFC 7009 §2.2)"},
    "CibaResponse": {
        "type": "object", "required": ["auth_req_id", "expires_in"],
        "properties": {"auth_req_id": _STRING, "expires_in": _INT, "interval": _INT},
    },
    "ApprovalStatus": {
        "type": "object", "required": ["id", "status", "decided_at"],
        "properties": {"id": _STRING, "status": {"enum": ["pending", "approved", "denied", "expired"]},
                       "decided_at": {"type": ["integer", "null"]}},
    },
    # -- Agent Auth (authgate.agentauth) --------------------------------------------------------------------
    "AgentProviderMetadata": {
        "type": "object", "required": ["issuer", "jwks_uri", "agent_token_endpoint"],
        "properties": {"issuer": _STRING, "jwks_uri": _STRING, "name": _STRING, "agent_token_endpoint": _STRING,
                       "accept_signature_algs": {"type": "array", "items": _STRING}, "draft": _STRING},
    },
    "PersonServerMetadata": {
        "type": "object",
        "required": ["issuer", "jwks_uri", "person_token_endpoint", "auth_token_endpoint", "interaction_endpoint"],
        "properties": {"issuer": _STRING, "jwks_uri": _STRING, "person_token_endpoint": _STRING,
                       "auth_token_endpoint": _STRING, "interaction_endpoint": _STRING, "name": _STRING,
                       "accept_signature_algs": {"type": "array", "items": _STRING}, "draft": _STRING},
    },
    "Enrolment": {
        "type": "object", "required": ["name", "jwk"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"},
                       "jwk": _ref("PublicJWK"),
                       "owner": {**_STRING, "description": "with the admin key only: the owner's username"}},
    },
    "PublicJWK": {
        "type": "object", "required": ["kty"],
        "properties": {"kty": {"enum": ["OKP", "EC"]}, "crv": {"enum": ["Ed25519", "P-256"]},
                       "alg": {"enum": ["Ed25519", "ES256"]}, "x": _STRING, "y": _STRING, "kid": _STRING},
    },
    "AgentTokenRefresh": {
        "type": "object", "description": "empty: a fresh token for the same key; jwk + proof: a new key",
        "properties": {"jwk": _ref("PublicJWK"), "proof": {"type": "string", "maxLength": 4096}},
    },
    "AgentToken": {
        "type": "object", "required": ["agent_id", "agent_token", "expires_in"],
        "properties": {"agent_id": _STRING, "agent_token": _STRING, "expires_in": _INT},
    },
    "PersonTokenRequest": {"type": "object", "required": ["resource"], "properties": {"resource": _STRING}},
    "PersonToken": {
        "type": "object", "required": ["person_token", "expires_in"],
        "properties": {"person_token": _STRING, "expires_in": _INT},
    },
    "AuthTokenRequest": {
        "type": "object", "required": ["resource_token", "presented_token"],
        "properties": {"resource_token": _STRING, "presented_token": _STRING,
                       "capabilities": {"type": "array", "items": {"enum": ["interaction"]}},
                       "justification": _STRING},
    },
    "AuthToken": {
        "type": "object", "required": ["auth_token", "expires_in"],
        "properties": {"auth_token": _STRING, "expires_in": _INT},
    },
    "Pending": {"type": "object", "required": ["status"], "properties": {"status": {"const": "pending"}}},
    # -- x402 facilitator (authgate.x402.facilitator, wire objects of authgate.x402.wire) ------------------
    "PaymentRequirements": {
        "type": "object", "required": ["scheme", "network", "asset", "amount", "payTo", "maxTimeoutSeconds"],
        "properties": {"scheme": {"type": "string", "maxLength": 256}, "network": {"type": "string", "maxLength": 256},
                       "asset": {"type": "string", "maxLength": 256}, "amount": _UINT_STRING,
                       "payTo": {"type": "string", "maxLength": 256},
                       "maxTimeoutSeconds": {"type": "integer", "minimum": 1}, "extra": _OBJECT},
    },
    "PaymentRequirementsV1": {
        "type": "object",
        "required": ["scheme", "network", "asset", "maxAmountRequired", "payTo", "maxTimeoutSeconds"],
        "properties": {"scheme": {"type": "string", "maxLength": 256}, "network": {"type": "string", "maxLength": 256},
                       "asset": {"type": "string", "maxLength": 256}, "maxAmountRequired": _UINT_STRING,
                       "payTo": {"type": "string", "maxLength": 256}, "resource": _STRING,
                       "maxTimeoutSeconds": {"type": "integer", "minimum": 1}, "extra": _OBJECT},
    },
    "ExactEvmPayload": {
        "type": "object", "required": ["authorization", "signature"],
        "description": "the exact scheme on EVM: an EIP-3009 transferWithAuthorization and its signature",
        "properties": {
            "signature": {"type": "string", "pattern": "^0x([0-9a-fA-F]{2})*$"},
            "authorization": {
                "type": "object", "required": ["from", "to", "value", "validAfter", "validBefore", "nonce"],
                "properties": {"from": _HEX_ADDRESS, "to": _HEX_ADDRESS, "value": _UINT_STRING,
                               "validAfter": _UINT_STRING, "validBefore": _UINT_STRING,
                               "nonce": {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}}},
        },
    },
    "PaymentPayload": {
        "type": "object", "required": ["x402Version", "payload", "accepted"],
        "properties": {"x402Version": {"const": 2}, "payload": _ref("ExactEvmPayload"),
                       "accepted": _ref("PaymentRequirements"), "resource": _OBJECT, "extensions": _OBJECT},
    },
    "PaymentPayloadV1": {
        "type": "object", "required": ["x402Version", "scheme", "network", "payload"],
        "properties": {"x402Version": {"const": 1}, "scheme": {"type": "string", "maxLength": 256},
                       "network": {"type": "string", "maxLength": 256}, "payload": _ref("ExactEvmPayload")},
    },
    "FacilitatorRequest": {
        "description": "x402 v2, or v1 (authgate profile): the client's payment and the server's matching offer",
        "anyOf": [
            {"type": "object", "required": ["x402Version", "paymentPayload", "paymentRequirements"],
             "properties": {"x402Version": {"const": 2}, "paymentPayload": _ref("PaymentPayload"),
                            "paymentRequirements": _ref("PaymentRequirements")}},
            {"type": "object", "required": ["x402Version", "paymentPayload", "paymentRequirements"],
             "properties": {"x402Version": {"const": 1}, "paymentPayload": _ref("PaymentPayloadV1"),
                            "paymentRequirements": _ref("PaymentRequirementsV1")}},
        ],
    },
    "VerifyResponse": {
        "type": "object", "required": ["isValid"],
        "properties": {"isValid": {"type": "boolean"}, "invalidReason": _STRING, "invalidMessage": _STRING,
                       "payer": _STRING, "extensions": _OBJECT, "extra": _OBJECT},
    },
    "SettleResponse": {
        "type": "object", "required": ["success", "transaction", "network"],
        "properties": {"success": {"type": "boolean"}, "errorReason": _STRING, "errorMessage": _STRING,
                       "payer": _STRING, "transaction": _STRING, "network": _STRING, "amount": _STRING,
                       "extensions": _OBJECT, "extra": _OBJECT},
    },
    "SupportedResponse": {
        "type": "object", "required": ["kinds", "extensions", "signers"],
        "properties": {
            "kinds": {"type": "array", "items": {
                "type": "object", "required": ["x402Version", "scheme", "network"],
                "properties": {"x402Version": _INT, "scheme": _STRING, "network": _STRING, "extra": _OBJECT}}},
            "extensions": {"type": "array", "items": _STRING},
            "signers": {"type": "object", "additionalProperties": {"type": "array", "items": _STRING}},
        },
    },
}

_CLIENT_AUTH: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]
_CLIENT_FIELDS = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
_TOKEN_FIELDS = (
    "grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "resource",
    "auth_req_id",  # CIBA
    "subject_token", "subject_token_type", "actor_token", "actor_token_type", "audience",
    "requested_token_type",  # RFC 8693
    "user_claims", "capture_method", "channel", "caller_id", "conversation_id", "reason",
    "request_code",  # the AAuth agent authorization grant
    *_CLIENT_FIELDS,
)
_CIBA_FIELDS = ("scope", "login_hint", "login_hint_token", "id_token_hint", "binding_message", "requested_expiry",
                "resource", "user_code", "request", "request_uri", *_CLIENT_FIELDS)


def _discovery_paths() -> dict[str, Any]:
    metadata = {"200": _json(_ref("ServerMetadata"), "metadata")}
    return {
        "/.well-known/oauth-authorization-server": {"get": {
            "summary": "Authorization server metadata (RFC 8414)", "responses": metadata}},
        "/.well-known/openid-configuration": {"get": {
            "summary": "The same metadata at the OpenID Connect discovery path", "responses": metadata}},
        "/jwks.json": {"get": {"summary": "Public signing keys", "responses": {"200": _json(_ref("JWKS"), "JWKS")}}},
        "/health": {"get": {"summary": "Liveness", "responses": {"200": _json(_ref("Health"), "alive")}}},
        "/ready": {"get": {"summary": "Readiness: database and signing key", "responses": {
            "200": _json(_ref("Readiness"), "ready"), "503": _json(_ref("Readiness"), "not ready")}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": _json(_ref("OpenAPIDocument"), "OpenAPI 3.1")}}},
    }


def _oauth_paths() -> dict[str, Any]:
    authorize_params = [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in (
        ("response_type", {"type": "string", "enum": ["code"]}),
        ("client_id", _ascii(2048)),  # ours, or an https URL (client ID metadata document)
        ("redirect_uri", _ascii(2000)),
        ("scope", {"type": "string", "pattern": "^[ !#-\\[\\]-~]*$", "maxLength": 1024}),  # RFC 6749 §3.3
        ("state", {"type": "string", "maxLength": 1024}),
        ("code_challenge", {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$", "maxLength": 43}),
        ("code_challenge_method", {"type": "string", "enum": ["S256"]}),
        ("resource", _ascii(2000)),
        ("prompt", {"type": "string", "maxLength": 32}),
    )]
    client_errors = {"400": _error("malformed request, or more than one client authentication method"),
                     "401": _error("client authentication failed"), "413": _error("body too large")}
    return {
        "/authorize": {
            "get": {"summary": "Authorization endpoint (code flow with PKCE S256)", "parameters": authorize_params,
                    "responses": {"200": _html("sign-in and consent page"),
                                  "303": _redirect("back to the client with a code or an error"),
                                  "400": _html("error page: the client or redirect URI cannot be trusted"),
                                  "429": _html("too many attempts")}},
            "post": {"summary": "Consent form submission (or an authorization request sent as a form)",
                     "requestBody": {"content": {FORM: {"schema": {"type": "object",
                                                                   "additionalProperties": _FORM_STRING}}}},
                     "responses": {"200": _html("the consent page"), "303": _redirect("back to the client"),
                                   "400": _html("error page"), "401": _html("wrong password"),
                                   "403": _html("bad form token"), "413": _html("form too large"),
                                   "429": _html("too many attempts")}},
        },
        "/token": {"post": {
            "summary": "Token endpoint: authorization_code, refresh_token, client_credentials, CIBA, token exchange, "
                       "AAuth agent authorization grant",
            "security": _CLIENT_AUTH,
            "requestBody": _form(_TOKEN_FIELDS, ("grant_type",), grant_type={"enum": GRANT_TYPES}),
            "responses": {"200": _json(_ref("TokenResponse"), "tokens"),
                          **client_errors, "400": _error("refused (RFC 6749 §5.2 and the grants' own codes)"),
                          "429": _retry_after("too many identification attempts (AAuth grant)")}}},
        "/bc-authorize": {"post": {
            "summary": "OpenID CIBA backchannel authentication (poll mode)", "security": [{"clientBasic": []}, {}],
            "requestBody": _form(_CIBA_FIELDS),
            "responses": {"200": _json(_ref("CibaResponse"), "request accepted"), **client_errors,
                          "429": _retry_after("too many backchannel authentication requests (per client, per "
                                              "person, or open requests of the person)")}}},
        "/introspect": {"post": {
            "summary": "Token introspection (RFC 7662)", "security": _CLIENT_AUTH,
            "requestBody": _form(("token", "token_type_hint", *_CLIENT_FIELDS)),
            "responses": {"200": _json(_ref("Introspection"), "introspection"), **client_errors}}},
        "/revoke": {"post": {
            "summary": "Token revocation (RFC 7009)", "security": _CLIENT_AUTH,
            "requestBody": _form(("token", "token_type_hint", *_CLIENT_FIELDS)),
            "responses": {"200": _json(_ref("Revocation"), "revoked, or unknown"), **client_errors}}},
    }


def _registration_paths(settings: Settings) -> dict[str, Any]:
    client_param = _path_param("client_id")
    rat: list[dict[str, list[str]]] = [{"registrationToken": []}]
    bad_rat = _error("missing or invalid registration access token", headers={"WWW-Authenticate": _header()})
    not_managed = _error("the client is not managed through dynamic registration")
    register: dict[str, Any] = {"summary": "Dynamic client registration (RFC 7591)"}
    if settings.registration == "closed":
        register["summary"] += ": disabled on this server"
        register["responses"] = {"403": _error("dynamic client registration is disabled")}
    else:
        responses = {"201": _json(_ref("ClientInformation"), "registered (or the same public client again)"),
                     "400": _error("invalid metadata, software statement or body"),
                     "403": _error("registration refused: max_clients reached"), "413": _error("body too large")}
        if settings.registration == "token":
            register["security"] = [{"initialAccessToken": []}]
            responses["401"] = _error("initial access token required", headers={"WWW-Authenticate": _header()})
        else:
            responses["429"] = _retry_after("too many registrations from this address")
        register["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref("ClientMetadata")}}}
        register["responses"] = responses
    return {
        "/register": {"post": register},
        "/register/{client_id}": {
            "get": {"summary": "Read a registration (RFC 7592)", "parameters": client_param, "security": rat,
                    "responses": {"200": _json(_ref("ClientInformation"), "registration"), "401": bad_rat,
                                  "403": not_managed}},
            "put": {"summary": "Update a registration (RFC 7592)", "parameters": client_param, "security": rat,
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ClientMetadata")}}},
                    "responses": {"200": _json(_ref("ClientInformation"), "updated"),
                                  "400": _error("invalid metadata or body"), "401": bad_rat, "403": not_managed,
                                  "413": _error("body too large")}},
            "delete": {"summary": "Delete a registration (RFC 7592)", "parameters": client_param, "security": rat,
                       "responses": {"204": {"description": "deleted"}, "401": bad_rat, "403": not_managed}},
        },
    }


def _page_paths(settings: Settings) -> dict[str, Any]:
    id_param = _path_param("id")
    token_param = _path_param("token")
    link_post: dict[str, Any] = {"summary": "Submit the code of a one-time link", "parameters": token_param}
    if settings.approvals_link_requires_code:
        link_post["requestBody"] = _page_form(("code", "decision"))
        link_post["responses"] = {"200": _html("decided"), "400": _html("bad form or wrong code"),
                                  "404": _html("unusable link"), "410": _html("link used, or request closed"),
                                  "429": _html("no code attempts left")}
    else:  # links open with GET only: the code form is not served
        link_post["responses"] = {"405": {**_html("links open with GET here"), "headers": {"Allow": _header()}}}
    watcher_errors = {
        "400": _error("malformed client authentication"),
        "401": _error("sign in or authenticate the client (HTTP Basic)"),
        "404": _error("no such approval request (or not yours)"),
    }
    return {
        "/signin": {
            "get": {"summary": "Sign-in page", "parameters": [{"name": "next", "in": "query", "required": False,
                                                               "schema": {"type": "string", "maxLength": 2048}}],
                    "responses": {"200": _html("sign-in page"), "303": _redirect("already signed in")}},
            "post": {"summary": "Sign in", "requestBody": _page_form(("username", "password", "next", "csrf")),
                     "responses": {"303": _redirect("signed in"), "400": _html("bad form"),
                                   "401": _html("wrong username or password"), "403": _html("bad form token"),
                                   "413": _html("form too large"), "429": _html("too many attempts")}}},
        "/signout": {"post": {"summary": "Sign out", "requestBody": _page_form(("csrf",)),
                              "responses": {"303": _redirect("to the sign-in page"),
                                            "403": _html("bad form token")}}},
        "/approvals": {"get": {"summary": "The signed-in person's approval inbox",
                               "responses": {"200": _html("inbox"), "303": _redirect("sign in first")}}},
        "/approvals/{id}": {
            "get": {"summary": "One approval request", "parameters": id_param,
                    "responses": {"200": _html("request page"), "303": _redirect("sign in first"),
                                  "404": _html("no such request")}},
            "post": {"summary": "Approve or deny", "parameters": id_param,
                     "requestBody": _page_form(("decision", "csrf")),
                     "responses": {"200": _html("decided"), "303": _redirect("sign in first"),
                                   "400": _html("neither approve nor deny"), "403": _html("bad form or form token"),
                                   "404": _html("no such request"), "409": _html("already decided or expired")}}},
        "/approvals/{id}/status": {"get": {
            "summary": "Outcome of an approval request, for its client or the signed-in person",
            "parameters": id_param, "security": [{"clientBasic": []}, {}],
            "responses": {"200": _json(_ref("ApprovalStatus"), "status"), **watcher_errors}}},
        "/approvals/{id}/events": {"get": {
            "summary": "Server-sent events: the request's status now and when it changes (then the stream ends)",
            "parameters": id_param, "security": [{"clientBasic": []}, {}],
            "responses": {"200": {"description": "events named status, data an ApprovalStatus",
                                  "content": {EVENT_STREAM: {"schema": _STRING}}}, **watcher_errors}}},
        "/approvals/link/{token}": {
            "get": {"summary": "A one-time approval link", "parameters": token_param,
                    "responses": {"200": _html("the code page"), "303": _redirect("to the request page"),
                                  "404": _html("unknown link"), "410": _html("link used, or request closed")}},
            "post": link_post},
        "/trust/mandates": {
            "get": {"summary": "The signed-in person's mandates",
                    "responses": {"200": _html("mandates page"), "303": _redirect("sign in first")}},
            "post": {"summary": "Issue a mandate (the JWT is shown once)",
                     "requestBody": _page_form(("csrf", "agent", "cap", "period", "ttl", "routes", "payees")),
                     "responses": {"200": _html("mandates page with the new mandate"),
                                   "303": _redirect("sign in first"), "400": _html("bad form or terms"),
                                   "403": _html("bad form token"), "413": _html("form too large")}}},
        "/trust/mandates/{jti}/revoke": {"post": {
            "summary": "Revoke one of the person's mandates", "parameters": _path_param("jti"),
            "requestBody": _page_form(("csrf",)),
            "responses": {"303": _redirect("to the mandates page, or sign in first"), "400": _html("bad form"),
                          "403": _html("bad form token"), "404": _html("no such mandate of yours"),
                          "413": _html("form too large")}}},
    }


def _ops_paths(settings: Settings) -> dict[str, Any]:
    if not settings.metrics_enabled:
        return {}
    operation: dict[str, Any] = {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "Prometheus text format", "content": {TEXT: {"schema": _STRING}}}}}
    if settings.metrics_token:
        operation["security"] = [{"metricsToken": []}]
        operation["responses"]["401"] = _error("the metrics bearer token is required",
                                               headers={"WWW-Authenticate": _header()})
    return {"/metrics": {"get": operation}}


def _signature_headers(*, content_digest: bool) -> list[dict[str, Any]]:
    """RFC 9421 with the agent token in ``Signature-Key`` (draft-hardt-httpbis-signature-key, scheme ``jwt``)."""
    params = [{"name": name, "in": "header", "required": True, "schema": {"type": "string", "maxLength": 8192}}
              for name in ("Signature-Input", "Signature", "Signature-Key")]
    if content_digest:
        params.append({"name": "Content-Digest", "in": "header", "required": False,
                       "schema": {"type": "string", "maxLength": 512},
                       "description": "RFC 9530; required (and signed) when there is a body"})
    return params


_PREFER = {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 64},
           "description": "wait=<seconds>: hold the answer until the person decides (bounded)"}


def _agentauth_paths() -> dict[str, Any]:
    sig_401 = _problem("the HTTP signature or the agent token in Signature-Key was refused",
                       headers={"Signature-Error": _header()})
    too_large = _problem("body too large")
    pending = _json(_ref("Pending"), "waiting for the person: poll Location",
                    headers={"Location": _header(), "Retry-After": _header(), "AAuth-Requirement": _header()})
    outcome = {"403": _problem("denied, or the person cannot be reached"),
               "404": _problem("no such pending request"), "408": _problem("the person did not decide in time"),
               "410": _problem("the result was already collected")}
    json_body = {"required": True, "content": {JSON: {"schema": _ref("PersonTokenRequest")}}}
    return {
        "/.well-known/aauth-agent.json": {"get": {
            "summary": "Agent provider metadata (Agent Auth)",
            "responses": {"200": _json(_ref("AgentProviderMetadata"), "metadata")}}},
        "/.well-known/aauth-person.json": {"get": {
            "summary": "Person server metadata (Agent Auth)",
            "responses": {"200": _json(_ref("PersonServerMetadata"), "metadata")}}},
        "/agentauth/jwks.json": {"get": {"summary": "Agent provider and person server signing keys",
                                         "responses": {"200": _json(_ref("JWKS"), "JWKS")}}},
        "/agentauth/agents": {"post": {
            "summary": "Enrol an agent's public key for its owner (an access token with the enrolment scope, or "
                       "the admin key)",
            "security": [{"agentEnrolment": []}],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("Enrolment")}}},
            "responses": {"201": _json(_ref("AgentToken"), "enrolled"),
                          "400": _problem("bad body, name, key or owner"),
                          "401": _problem("a valid bearer token is required", headers={"WWW-Authenticate": _header()}),
                          "403": _problem("the token lacks the enrolment scope, or its subject is not a person"),
                          "413": too_large}}},
        "/agentauth/agent-token": {"post": {
            "summary": "A fresh agent token, optionally for a new key (signed by the current key)",
            "parameters": _signature_headers(content_digest=True),
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref("AgentTokenRefresh")}}},
            "responses": {"200": _json(_ref("AgentToken"), "agent token"), "400": _problem("bad body, key or proof"),
                          "401": sig_401, "403": _problem("not an agent of this provider, or no longer enrolled"),
                          "409": _problem("the key was already replaced"), "413": too_large}}},
        "/agentauth/person-token": {"post": {
            "summary": "A person token for a resource (signed by the agent)",
            "parameters": _signature_headers(content_digest=True), "requestBody": json_body,
            "responses": {"200": _json(_ref("PersonToken"), "person token"), "400": _problem("bad body or resource"),
                          "401": sig_401, "403": _problem("no person here for this agent"), "413": too_large}}},
        "/agentauth/auth-token": {"post": {
            "summary": "An auth token for a resource: at once, or after the person's consent (202, then poll)",
            "parameters": [*_signature_headers(content_digest=True), _PREFER],
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("AuthTokenRequest")}}},
            "responses": {"200": _json(_ref("AuthToken"), "auth token"), "202": pending,
                          "400": _problem("bad body, resource token or presented token"), "401": sig_401,
                          **outcome, "413": too_large,
                          "429": _problem("too many requests waiting for the person",
                                          headers={"Retry-After": _header()})}}},
        "/agentauth/pending/{handle}": {"get": {
            "summary": "Poll a pending auth-token request (signed by the same agent key)",
            "parameters": [*_path_param("handle", 128), *_signature_headers(content_digest=False), _PREFER],
            "responses": {"200": _json(_ref("AuthToken"), "auth token"), "202": pending,
                          "400": _problem("malformed request"), "401": sig_401, **outcome, "413": too_large}}},
        "/agentauth/interaction": {"get": {
            "summary": "Where the person enters the interaction code; leads to the approval page",
            "parameters": [{"name": "code", "in": "query", "required": False,
                            "schema": {"type": "string", "maxLength": 64}}],
            "responses": {"303": _redirect("to the approval request page"),
                          "404": _text("unknown or expired code")}}},
    }


def _x402_paths(settings: Settings) -> dict[str, Any]:
    secured = bool(settings.x402_facilitator_token)
    unavailable = _retry_after("the facilitator's chain is not available")
    common: dict[str, Any] = {"503": unavailable}
    extra: dict[str, Any] = {}
    if secured:
        common["401"] = _error("the facilitator bearer token is required", headers={"WWW-Authenticate": _header()})
        extra["security"] = [{"facilitatorToken": []}]
    body = {"required": True, "content": {JSON: {"schema": _ref("FacilitatorRequest")}}}
    refused = {"400": _error("not a facilitator request (x402 v2 or v1)"), "413": _error("body too large")}
    return {
        "/x402/verify": {"post": {
            "summary": "x402 facilitator: verify a payment (HTTP 200 whatever the verdict)", **extra,
            "requestBody": body,
            "responses": {"200": _json(_ref("VerifyResponse"), "verdict"), **refused, **common}}},
        "/x402/settle": {"post": {
            "summary": "x402 facilitator: settle a payment on chain, once (HTTP 200 whatever the outcome)", **extra,
            "requestBody": body,
            "responses": {"200": _json(_ref("SettleResponse"), "outcome"), **refused, **common}}},
        "/x402/supported": {"get": {
            "summary": "x402 facilitator: the kinds served and the addresses that settle", **extra,
            "responses": {"200": _json(_ref("SupportedResponse"), "supported kinds"), **common}}},
    }


def _paths(settings: Settings) -> dict[str, Any]:
    paths = {**_discovery_paths(), **_oauth_paths(), **_registration_paths(settings), **_page_paths(settings),
             **_ops_paths(settings)}
    if settings.agentauth_enabled:
        paths.update(_agentauth_paths())
    if settings.x402_facilitator:
        paths.update(_x402_paths(settings))
    return paths


def _security_schemes(settings: Settings) -> dict[str, Any]:
    schemes: dict[str, Any] = {
        "clientBasic": {"type": "http", "scheme": "basic", "description": "client_secret_basic"},
        "registrationToken": {"type": "http", "scheme": "bearer",
                              "description": "RFC 7592 registration access token"},
    }
    if settings.registration == "token":
        schemes["initialAccessToken"] = {"type": "http", "scheme": "bearer",
                                         "description": "RFC 7591 initial access token"}
    if settings.metrics_enabled and settings.metrics_token:
        schemes["metricsToken"] = {"type": "http", "scheme": "bearer", "description": "metrics_token"}
    if settings.agentauth_enabled:
        schemes["agentEnrolment"] = {"type": "http", "scheme": "bearer",
                                     "description": "an access token with agentauth_enroll_scope, or the admin key"}
    if settings.x402_facilitator and settings.x402_facilitator_token:
        schemes["facilitatorToken"] = {"type": "http", "scheme": "bearer", "description": "x402_facilitator_token"}
    return schemes


def document(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "authgate", "version": "0.1.0",
                 "description": "Authorization server, resource gateway and agent SDK for AI agents."},
        "servers": [{"url": settings.issuer_url}],
        "paths": _paths(settings),
        "components": {"schemas": SCHEMAS, "securitySchemes": _security_schemes(settings)},
    }
