"""The OAuth 2.1 authorization server (draft-ietf-oauth-v2-1): metadata, authorization endpoint with PKCE,
token endpoint and its grants, introspection (RFC 7662), revocation (RFC 7009), JWT access tokens (RFC 9068)."""
