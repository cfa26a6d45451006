"""Route policy matching for AuthGateMiddleware."""

from __future__ import annotations

import pytest

from authgate.resource import Rule, protect, public


def test_subtree_rule_matches_on_segment_boundaries() -> None:
    rule = protect("/notes/*", "r")
    assert rule.matches("GET", "/notes")
    assert rule.matches("GET", "/notes/")
    assert rule.matches("POST", "/notes/1/x")
    assert not rule.matches("GET", "/notes-admin")
    assert not rule.matches("GET", "/note")


def test_exact_rule_and_root_subtree() -> None:
    assert protect("/a").matches("GET", "/a")
    assert not protect("/a").matches("GET", "/a/")
    everything = protect("/*")
    assert everything.matches("GET", "/") and everything.matches("GET", "/x/y")


def test_methods_and_head() -> None:
    rule = protect("/a", "r", methods={"get"})
    assert rule.methods == frozenset({"GET", "HEAD"})
    assert rule.matches("HEAD", "/a")
    assert not rule.matches("POST", "/a")


def test_tuple_form_and_validation() -> None:
    rule = Rule.coerce(("/x/*", ["POST"], ["w", "r", "w"]))
    assert rule.scopes == ("w", "r")
    assert rule.methods == frozenset({"POST"})
    with pytest.raises(ValueError):
        protect("x")
    with pytest.raises(ValueError):
        protect("/x", 'a"b')
    with pytest.raises(ValueError):
        Rule("/x", ("s",), public=True)
    assert public("/health").public
