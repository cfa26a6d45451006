"""Every wire name of the Agent Authorization Grant, authgate profile, in one place.

draft-rosenberg-oauth-aauth (Rosenberg/White, "Agentic Authorization OAuth 2.1 Extension"):
https://datatracker.ietf.org/doc/draft-rosenberg-oauth-aauth/

Only a few names are settled by public draft text (draft-patwhite-aauth-00, full text): the grant URN, the
polling errors and ``/.well-known/aauth.json`` with ``scope_descriptions``. Everything marked *profile* below is
authgate's own choice (``shared/specs/aauth-agent-authorization-grant.md`` §6), kept here so it can follow the
draft once its body text is settled. The draft revision we implement is a setting (``aauth_draft``), advertised
in the server metadata as :data:`META_DRAFT`.
"""

from __future__ import annotations

from typing import Final

#: The draft revision this profile follows unless ``aauth_draft`` says otherwise.
DEFAULT_DRAFT: Final = "draft-rosenberg-oauth-aauth-01"

# -- grant (draft text) -------------------------------------------------------------------------------------

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:agent_authorization"

# -- token request parameters (form-encoded, token endpoint) -------------------------------------------------

#: profile: JSON object of OIDC standard claim names (``address.postal_code`` nested or dotted).
USER_CLAIMS: Final = "user_claims"
#: profile: how the user reached the agent, one of :data:`CHANNELS`.
CHANNEL: Final = "channel"
#: profile: E.164 number from telephony signalling, set by the platform (never the LLM). Optional.
CALLER_ID: Final = "caller_id"
#: profile: JSON object, one entry per submitted claim (same keys as ``user_claims``), each one of
#: :data:`CAPTURE_METHODS`.
CAPTURE_METHOD: Final = "capture_method"
#: profile: the agent platform's conversation identifier, for audit and per-conversation limits.
CONVERSATION_ID: Final = "conversation_id"
#: draft (patwhite-00): the agent's human-readable justification, shown verbatim and labelled unverified.
REASON: Final = "reason"
#: draft (patwhite-00): the handle of a pending escalation, presented again to poll.
REQUEST_CODE: Final = "request_code"
SCOPE: Final = "scope"
RESOURCE: Final = "resource"  # RFC 8707

#: profile: values of ``channel``.
CHANNELS: Final = ("pstn", "sms")
#: profile: values of ``capture_method`` entries. Each names deterministic capture; free LLM text is none of
#: them, so a claim that only an LLM "heard" cannot be submitted (profile §6.3 rule 1).
#:
#: * ``dtmf``: keyed in on the phone keypad;
#: * ``asr_validated``: a slot filled from speech recognition and validated against the ASR transcript;
#: * ``platform_tool``: entered through the agent platform's structured tool layer (a form, a typed reply
#:   parsed by code);
#: * ``caller_id_lookup``: taken from telephony signalling (the calling number) by the platform.
CAPTURE_METHODS: Final = ("dtmf", "asr_validated", "platform_tool", "caller_id_lookup")

# -- responses -----------------------------------------------------------------------------------------------

INTERVAL: Final = "interval"  # RFC 8628 name
POLL_INTERVAL_ALIAS: Final = "poll_interval"  # patwhite-00 name, accepted when reading (SDK)
EXPIRES_IN: Final = "expires_in"
#: profile: in the first ``authorization_pending`` answer, where the agent may wait for the person's decision
#: instead of polling: server-sent ``status`` events (``pending``, then ``approved``, ``denied`` or ``expired``),
#: read with the client's HTTP Basic credentials. After a decision the agent polls the token endpoint once.
APPROVAL_EVENTS_ENDPOINT: Final = "approval_events_endpoint"

# -- errors (draft text, RFC 8628 meanings) ------------------------------------------------------------------

AUTHORIZATION_PENDING: Final = "authorization_pending"
SLOW_DOWN: Final = "slow_down"
ACCESS_DENIED: Final = "access_denied"
EXPIRED_TOKEN: Final = "expired_token"
INVALID_GRANT: Final = "invalid_grant"
#: profile: the one description of every identity failure (no match, ambiguous, too few claims, locked user).
UNIFORM_FAILURE: Final = "the identity details could not be verified"

# -- access-token claims (RFC 9068 + RFC 8693 ``act``; ``amr`` values are profile) ---------------------------

ACT: Final = "act"
AMR: Final = "amr"
AMR_PII: Final = "pii"  # identified from details collected in conversation
AMR_OOB: Final = "oob"  # plus the user's approval out of band

# -- authorization server metadata (RFC 8414; profile names) -------------------------------------------------

META_USER_CLAIMS_SUPPORTED: Final = "agent_authorization_user_claims_supported"
META_MIN_CLAIMS: Final = "agent_authorization_min_claims"
META_DRAFT: Final = "agent_authorization_draft"
META_CHANNELS_SUPPORTED: Final = "agent_authorization_channels_supported"
META_CAPTURE_METHODS_SUPPORTED: Final = "agent_authorization_capture_methods_supported"

# -- client metadata (RFC 7591; profile names) ---------------------------------------------------------------

#: Space-separated scopes (like ``scope``): the most this client can ever get from the grant.
CLIENT_SCOPE_CEILING: Final = "agent_authorization_scope_ceiling"
#: Space-separated scopes within the ceiling that always need the user's approval out of band.
CLIENT_ELEVATED_SCOPES: Final = "agent_authorization_elevated_scopes"
#: JSON array of :data:`CHANNELS` the client serves; ``channel`` must be one of them.
CLIENT_CHANNELS: Final = "agent_channels"

# -- resource server discovery (draft text; layout per the only third-party reading) -------------------------

AAUTH_WELL_KNOWN: Final = "/.well-known/aauth.json"
SCOPE_DESCRIPTIONS: Final = "scope_descriptions"

# -- approvals -----------------------------------------------------------------------------------------------

APPROVAL_KIND: Final = "aauth_escalation"
