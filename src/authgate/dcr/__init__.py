"""Dynamic Client Registration (RFC 7591), its management protocol (RFC 7592), software statements, and
client ID metadata documents (draft-ietf-oauth-client-id-metadata-document)."""
