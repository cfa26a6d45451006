"""Which redirect URIs a client may register (RFC 7591 §2, RFC 9700 §4.1, RFC 8252 §7).

Shared by registration, registration updates and client ID metadata documents, so every path applies the
same rules: absolute URI, no fragment (not even an empty one), no userinfo, no dangerous scheme; ``https``
anywhere, ``http`` only on loopback, private-use schemes (``com.example.app:/cb``) for native apps.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from authgate.config import is_loopback_host
from authgate.errors import InvalidRedirectURI

MAX_REDIRECT_URIS = 20
MAX_URI_LENGTH = 2000
_FORBIDDEN_SCHEMES = {"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "ftp", "ws", "wss"}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def check_redirect_uri(uri: object) -> str:
    if not isinstance(uri, str) or not uri:
        raise InvalidRedirectURI("redirect_uris must be non-empty strings")
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidRedirectURI("redirect URI too long")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in uri) or "\\" in uri:
        raise InvalidRedirectURI("redirect URI contains whitespace, control characters or backslashes")
    if not uri.isascii():
        # A URI is ASCII (RFC 3986 §2); internationalised hosts are registered in punycode. Raw Unicode would
        # let "a\u3002evil.example" (the browser goes to a.evil.example) or a bidi override pass for another
        # host on the consent page.
        raise InvalidRedirectURI("redirect URI must be ASCII (use punycode and percent-encoding)")
    if "#" in uri:
        raise InvalidRedirectURI("redirect URI must not contain a fragment")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise InvalidRedirectURI("redirect URI is malformed") from exc
    del port
    scheme = parts.scheme.lower()
    if not scheme or not _SCHEME.match(scheme):
        raise InvalidRedirectURI("redirect URI must be absolute")
    if scheme in _FORBIDDEN_SCHEMES:
        raise InvalidRedirectURI(f"redirect URI scheme {scheme} is not allowed")
    if "@" in parts.netloc:
        raise InvalidRedirectURI("redirect URI must not contain userinfo")
    if scheme == "https":
        if not parts.hostname:
            raise InvalidRedirectURI("https redirect URI needs a host")
    elif scheme == "http":
        if not parts.hostname or not is_loopback_host(parts.hostname):
            raise InvalidRedirectURI("http redirect URIs are only allowed on loopback")
    else:
        # Private-use scheme for native apps (RFC 8252 §7.1): reverse-DNS style, containing a period.
        if "." not in scheme:
            raise InvalidRedirectURI("private-use redirect URI schemes must be reverse domain names")
    return uri


def check_redirect_uris(value: object, *, required: bool) -> list[str]:
    if value is None:
        if required:
            raise InvalidRedirectURI("redirect_uris is required")
        return []
    if not isinstance(value, list):
        raise InvalidRedirectURI("redirect_uris must be an array")
    if required and not value:
        raise InvalidRedirectURI("redirect_uris must not be empty")
    if len(value) > MAX_REDIRECT_URIS:
        raise InvalidRedirectURI(f"at most {MAX_REDIRECT_URIS} redirect URIs")
    out: list[str] = []
    for uri in value:
        checked = check_redirect_uri(uri)
        if checked not in out:
            out.append(checked)
    return out
