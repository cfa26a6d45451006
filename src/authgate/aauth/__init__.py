"""AAuth: the agent authorization grant (authgate profile of draft-rosenberg-oauth-aauth).

An agent that talks to a person in conversation (a phone line, SMS, a chat widget) collects identifying details
and exchanges them at the token endpoint for a low-privilege token; riskier scopes escalate to the person's
approval on a channel they registered.

- ``normalize``: canonical forms of identity attributes (NFKC, case, punctuation, dates, E.164) and the flattening
  of the OIDC-shaped ``user_claims`` object.
- ``directory``: the user directory of *blinded* attributes (HMAC-SHA-256 under a server pepper; no raw PII at
  rest) and the matching rule (enough attributes, one non-public, no contradiction, exactly one person).
- ``abuse``: per-dimension rate limits and the durable per-person lock-out after repeated failures.
"""
