"""WWW-Authenticate parsing (RFC 9110 §11.6.1, RFC 6750 §3)."""

from __future__ import annotations

import pytest

from authgate.agent import Challenge, bearer_challenge, parse_challenges


def test_bearer_with_quoted_params() -> None:
    (ch,) = parse_challenges(
        ['Bearer resource_metadata="https://api.example/.well-known/oauth-protected-resource/mcp", scope="a b"']
    )
    assert ch == Challenge(
        "bearer", {"resource_metadata": "https://api.example/.well-known/oauth-protected-resource/mcp", "scope": "a b"}
    )


def test_escapes_commas_and_equals_inside_quotes() -> None:
    (ch,) = parse_challenges(['Bearer error_description="a \\"quoted\\", x=y, \\\\ done", error=invalid_token'])
    assert ch.params == {"error_description": 'a "quoted", x=y, \\ done', "error": "invalid_token"}


def test_multiple_challenges_in_one_field_and_across_fields() -> None:
    chs = parse_challenges(['Basic realm="x", Bearer error="insufficient_scope", scope="admin"', 'DPoP algs="ES256"'])
    assert [c.scheme for c in chs] == ["basic", "bearer", "dpop"]
    assert chs[1].params == {"error": "insufficient_scope", "scope": "admin"}
    assert bearer_challenge(['Basic realm="x", Bearer error="insufficient_scope", scope="admin"']) == chs[1]


def test_case_insensitive_scheme_and_names_first_value_wins() -> None:
    (ch,) = parse_challenges(['BEARER Scope="a", scope="b"'])
    assert ch.scheme == "bearer" and ch.params == {"scope": "a"}


def test_token68_and_bare_schemes() -> None:
    chs = parse_challenges(["Negotiate abc/+==, Bearer", "Bearer"])
    assert chs[0] == Challenge("negotiate", {}, "abc/+==")
    assert chs[1] == Challenge("bearer") and chs[2] == Challenge("bearer")


def test_whitespace_around_equals_and_empty_list_elements() -> None:
    (ch,) = parse_challenges(['Bearer ,  realm = "r" ,, scope=read ,'])
    assert ch.params == {"realm": "r", "scope": "read"}


def test_unquoted_url_value_is_tolerated() -> None:
    (ch,) = parse_challenges(["Bearer resource_metadata=https://a.example/x?y=1, scope=read"])
    assert ch.params["resource_metadata"] == "https://a.example/x?y=1"


@pytest.mark.parametrize("header", ["", ",,", '"', 'Bearer a="unterminated', "Bearer =x", 'Bearer a=b "junk', "\x00"])
def test_malformed_never_raises(header: str) -> None:
    parse_challenges([header])


def test_no_bearer() -> None:
    assert bearer_challenge(['Basic realm="x"']) is None
    assert bearer_challenge([]) is None
