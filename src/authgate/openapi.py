"""The OpenAPI 3.1 description of the server's HTTP endpoints, served at ``/openapi.json``.

It is written by hand, next to no framework that could generate it, and it is kept honest by a test that runs
schemathesis against a live server and checks every response (status, content type, body schema) against it.
Where an endpoint answers with a page for people (sign-in, consent, approval pages), the document says
``text/html`` and no more: those are not an API.
"""

from __future__ import annotations

from typing import Any

from authgate.config import Settings

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
HTML = "text/html"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("OAuthError"), description)


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"Location": {"schema": {"type": "string"}}}}


_STRING = {"type": "string"}
_FORM_STRING = {"type": "string", "maxLength": 4096}

SCHEMAS: dict[str, Any] = {
    "OAuthError": {
        "type": "object", "required": ["error"],
        "properties": {"error": _STRING, "error_description": _STRING, "error_uri": _STRING},
    },
    "TokenResponse": {
        "type": "object", "required": ["access_token", "token_type"],
        "properties": {"access_token": _STRING, "token_type": _STRING, "expires_in": {"type": "integer"},
                       "refresh_token": _STRING, "scope": _STRING, "issued_token_type": _STRING},
    },
    "ServerMetadata": {
        "type": "object", "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"],
        "properties": {"issuer": _STRING, "authorization_endpoint": _STRING, "token_endpoint": _STRING,
                       "jwks_uri": _STRING, "registration_endpoint": _STRING},
    },
    "JWKS": {"type": "object", "required": ["keys"],
             "properties": {"keys": {"type": "array", "items": {"type": "object"}}}},
    "ClientMetadata": {
        "type": "object", "description": "RFC 7591 client metadata",
        "properties": {"redirect_uris": {"type": "array", "items": _STRING}, "client_name": _STRING,
                       "grant_types": {"type": "array", "items": _STRING},
                       "response_types": {"type": "array", "items": _STRING},
                       "token_endpoint_auth_method": _STRING, "scope": _STRING, "jwks_uri": _STRING,
                       "software_statement": _STRING},
    },
    "ClientInformation": {
        "type": "object", "required": ["client_id"],
        "properties": {"client_id": _STRING, "client_secret": _STRING,
                       "client_id_issued_at": {"type": "integer"}, "client_secret_expires_at": {"type": "integer"},
                       "registration_access_token": _STRING, "registration_client_uri": _STRING},
    },
    "Introspection": {
        "type": "object", "required": ["active"],
        "properties": {"active": {"type": "boolean"}, "scope": _STRING, "client_id": _STRING, "sub": _STRING,
                       "exp": {"type": "integer"}, "iat": {"type": "integer"}, "aud": {}, "iss": _STRING,
                       "token_type": _STRING},
    },
    "CibaResponse": {
        "type": "object", "required": ["auth_req_id", "expires_in"],
        "properties": {"auth_req_id": _STRING, "expires_in": {"type": "integer"}, "interval": {"type": "integer"}},
    },
    "ApprovalStatus": {
        "type": "object", "required": ["id", "status"],
        "properties": {"id": _STRING, "status": {"enum": ["pending", "approved", "denied", "expired"]}},
    },
}

_CLIENT_AUTH: list[dict[str, list[str]]] = [{"clientBasic": []}, {}]


def _token_form() -> dict[str, Any]:
    fields = ["grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "resource",
              "client_id", "client_secret", "client_assertion", "client_assertion_type", "auth_req_id",
              "agent_token", "identity", "subject_token", "subject_token_type", "actor_token",
              "actor_token_type", "audience", "requested_token_type"]
    return {"type": "object", "required": ["grant_type"],
            "properties": {name: _FORM_STRING for name in fields}}


def _paths(settings: Settings) -> dict[str, Any]:
    id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 200}}]
    paths: dict[str, Any] = {
        "/.well-known/oauth-authorization-server": {"get": {
            "summary": "Authorization server metadata (RFC 8414)",
            "responses": {"200": _json(_ref("ServerMetadata"), "metadata")}}},
        "/.well-known/openid-configuration": {"get": {
            "summary": "The same metadata at the OpenID Connect discovery path",
            "responses": {"200": _json(_ref("ServerMetadata"), "metadata")}}},
        "/jwks.json": {"get": {"summary": "Public signing keys", "responses": {"200": _json(_ref("JWKS"), "JWKS")}}},
        "/health": {"get": {"summary": "Liveness", "responses": {"200": _json(
            {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, "alive")}}},
        "/ready": {"get": {"summary": "Readiness: database and signing key", "responses": {
            "200": _json({"type": "object", "required": ["status"]}, "ready"),
            "503": _json({"type": "object", "required": ["status", "problems"]}, "not ready")}}},
        "/authorize": {
            "get": {"summary": "Authorization endpoint (code flow with PKCE S256)",
                    "parameters": [{"name": n, "in": "query", "required": False,
                                    "schema": {"type": "string", "maxLength": 2048}}
                                   for n in ("response_type", "client_id", "redirect_uri", "scope", "state",
                                             "code_challenge", "code_challenge_method", "resource", "prompt")],
                    "responses": {"200": _html("sign-in and consent page"),
                                  "303": _redirect("back to the client with a code or an error"),
                                  "400": _html("error page: the client or redirect URI cannot be trusted"),
                                  "403": _html("error page"), "429": _html("too many attempts")}},
            "post": {"summary": "Consent form submission",
                     "requestBody": {"content": {FORM: {"schema": {"type": "object",
                                                                   "additionalProperties": _FORM_STRING}}}},
                     "responses": {"200": _html("the consent page again, with an error"),
                                   "303": _redirect("back to the client"), "400": _html("error page"),
                                   "401": _html("wrong password"), "403": _html("error page"),
                                   "413": _html("form too large"), "429": _html("too many attempts")}},
        },
        "/token": {"post": {
            "summary": "Token endpoint: authorization_code, refresh_token, client_credentials, CIBA, AAuth grant",
            "security": _CLIENT_AUTH,
            "requestBody": {"required": True, "content": {FORM: {"schema": _token_form()}}},
            "responses": {"200": _json(_ref("TokenResponse"), "tokens"), "400": _error("refused"),
                          "401": _error("client authentication failed"), "403": _error("refused"),
                          "405": _error("wrong method"), "413": _error("body too large"),
                          "415": _error("not a form"), "429": _error("slow down")}}},
        "/bc-authorize": {"post": {
            "summary": "OpenID CIBA backchannel authentication (poll mode)", "security": _CLIENT_AUTH,
            "requestBody": {"required": True, "content": {FORM: {"schema": {
                "type": "object", "properties": {n: _FORM_STRING for n in (
                    "scope", "login_hint", "binding_message", "requested_expiry", "client_id", "client_secret")}}}}},
            "responses": {"200": _json(_ref("CibaResponse"), "request accepted"), "400": _error("refused"),
                          "401": _error("client authentication failed"), "403": _error("refused"),
                          "413": _error("body too large"), "415": _error("not a form"),
                          "429": _error("slow down")}}},
        "/introspect": {"post": {
            "summary": "Token introspection (RFC 7662)", "security": _CLIENT_AUTH,
            "requestBody": {"required": True, "content": {FORM: {"schema": {
                "type": "object", "properties": {n: _FORM_STRING for n in (
                    "token", "token_type_hint", "client_id", "client_secret")}}}}},
            "responses": {"200": _json(_ref("Introspection"), "introspection"), "400": _error("refused"),
                          "401": _error("client authentication failed"), "413": _error("body too large"),
                          "415": _error("not a form")}}},
        "/revoke": {"post": {
            "summary": "Token revocation (RFC 7009)", "security": _CLIENT_AUTH,
            "requestBody": {"required": True, "content": {FORM: {"schema": {
                "type": "object", "properties": {n: _FORM_STRING for n in (
                    "token", "token_type_hint", "client_id", "client_secret")}}}}},
            "responses": {"200": {"description": "revoked, or unknown (no body)"}, "400": _error("refused"),
                          "401": _error("client authentication failed"), "413": _error("body too large"),
                          "415": _error("not a form")}}},
        "/signin": {
            "get": {"summary": "Sign-in page", "parameters": [{"name": "next", "in": "query", "required": False,
                                                               "schema": {"type": "string", "maxLength": 2048}}],
                    "responses": {"200": _html("sign-in page")}},
            "post": {"summary": "Sign in", "requestBody": {"content": {FORM: {"schema": {
                "type": "object", "properties": {n: _FORM_STRING for n in ("username", "password", "next",
                                                                           "csrf")}}}}},
                     "responses": {"303": _redirect("signed in"), "400": _html("bad form"),
                                   "401": _html("wrong username or password"), "403": _html("bad form token"),
                                   "413": _html("form too large"), "429": _html("too many attempts")}}},
        "/signout": {"post": {"summary": "Sign out", "responses": {"303": _redirect("to the sign-in page")}}},
        "/approvals": {"get": {"summary": "The signed-in person's approval inbox",
                               "responses": {"200": _html("inbox"), "303": _redirect("sign in first")}}},
        "/approvals/{id}": {
            "get": {"summary": "One approval request", "parameters": id_param,
                    "responses": {"200": _html("request page"), "303": _redirect("sign in first"),
                                  "404": _html("no such request")}},
            "post": {"summary": "Approve or deny", "parameters": id_param,
                     "requestBody": {"content": {FORM: {"schema": {"type": "object", "properties": {
                         n: _FORM_STRING for n in ("decision", "csrf")}}}}},
                     "responses": {"200": _html("decided"), "303": _redirect("sign in first"),
                                   "400": _html("bad form"), "403": _html("bad form token"),
                                   "404": _html("no such request"), "409": _html("already decided"),
                                   "410": _html("expired"), "413": _html("form too large")}}},
        "/approvals/{id}/status": {"get": {
            "summary": "Outcome of an approval request, for its client or the signed-in person",
            "parameters": id_param, "security": [{"clientBasic": []}, {}],
            "responses": {"200": _json(_ref("ApprovalStatus"), "status"), "401": _error("not authenticated"),
                          "404": _error("no such request")}}},
        "/approvals/link/{token}": {
            "get": {"summary": "A one-time approval link",
                    "parameters": [{"name": "token", "in": "path", "required": True,
                                    "schema": {"type": "string", "maxLength": 200}}],
                    "responses": {"200": _html("link page"), "303": _redirect("to the request page"),
                                  "404": _html("unusable link"), "410": _html("unusable link"),
                                  "429": _html("too many attempts")}},
            "post": {"summary": "Submit the code of a one-time link",
                     "parameters": [{"name": "token", "in": "path", "required": True,
                                     "schema": {"type": "string", "maxLength": 200}}],
                     "requestBody": {"content": {FORM: {"schema": {"type": "object", "properties": {
                         n: _FORM_STRING for n in ("code", "decision", "csrf")}}}}},
                     "responses": {"200": _html("result page"), "303": _redirect("to the request page"),
                                   "400": _html("bad form"), "403": _html("wrong code"),
                                   "404": _html("unusable link"), "410": _html("unusable link"),
                                   "413": _html("form too large"), "429": _html("too many attempts")}}},
    }
    if not settings.approvals_link_requires_code:  # links open with GET; the code form is not served
        paths["/approvals/link/{token}"]["post"]["responses"] = {"405": _html("links open with GET here")}
    if settings.metrics_enabled:
        paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": _STRING}}},
            "401": _error("metrics_token required")}}}
    if settings.registration != "closed":
        client_param = [{"name": "client_id", "in": "path", "required": True,
                         "schema": {"type": "string", "maxLength": 200}}]
        rat: list[dict[str, list[str]]] = [{"registrationToken": []}]
        paths["/register"] = {"post": {
            "summary": "Dynamic client registration (RFC 7591)",
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ClientMetadata")}}},
            "responses": {"201": _json(_ref("ClientInformation"), "registered"),
                          "400": _error("invalid metadata"), "401": _error("initial access token required"),
                          "403": _error("registration refused"), "413": _error("body too large"),
                          "415": _error("not JSON"), "429": _error("slow down")}}}
        paths["/register/{client_id}"] = {
            "get": {"summary": "Read a registration (RFC 7592)", "parameters": client_param, "security": rat,
                    "responses": {"200": _json(_ref("ClientInformation"), "registration"),
                                  "401": _error("bad registration access token")}},
            "put": {"summary": "Update a registration (RFC 7592)", "parameters": client_param, "security": rat,
                    "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ClientMetadata")}}},
                    "responses": {"200": _json(_ref("ClientInformation"), "updated"),
                                  "400": _error("invalid metadata"), "401": _error("bad registration access token"),
                                  "413": _error("body too large"), "415": _error("not JSON")}},
            "delete": {"summary": "Delete a registration (RFC 7592)", "parameters": client_param, "security": rat,
                       "responses": {"204": {"description": "deleted"},
                                     "401": _error("bad registration access token")}},
        }
    return paths


def document(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "authgate", "version": "0.1.0",
                 "description": "Authorization server, resource gateway and agent SDK for AI agents."},
        "servers": [{"url": settings.issuer_url}],
        "paths": _paths(settings),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "clientBasic": {"type": "http", "scheme": "basic", "description": "client_secret_basic"},
                "registrationToken": {"type": "http", "scheme": "bearer",
                                      "description": "RFC 7592 registration access token"},
            },
        },
    }
