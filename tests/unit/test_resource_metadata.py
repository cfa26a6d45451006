"""RFC 8707 identifiers and the RFC 9728 document, without any server."""

from __future__ import annotations

import pytest

from authgate.resource import ProtectedResource, canonical_resource
from authgate.resource.metadata import same_resource


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("https://api.example.com/mcp", "https://api.example.com/mcp"),
        ("HTTPS://API.Example.COM/mcp/", "https://api.example.com/mcp"),
        ("https://api.example.com:443/mcp", "https://api.example.com/mcp"),
        ("http://api.example.com:80", "http://api.example.com"),
        ("http://api.example.com:8080/", "http://api.example.com:8080"),
        ("https://api.example.com/MCP#frag", "https://api.example.com/MCP"),  # path case is significant
        ("http://[::1]:9000/x", "http://[::1]:9000/x"),
    ],
)
def test_canonical_resource(raw: str, canonical: str) -> None:
    assert canonical_resource(raw) == canonical


@pytest.mark.parametrize("bad", ["mcp", "ftp://h/x", "https://user@h/x", "https:///x", "http://h:99999/"])
def test_canonical_resource_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        canonical_resource(bad)
    assert not same_resource(bad, bad)


def test_path_insertion() -> None:
    pr = ProtectedResource(resource="https://h.example/public/mcp", authorization_servers=["https://as.example"])
    assert pr.metadata_path == "/.well-known/oauth-protected-resource/public/mcp"
    assert pr.metadata_url == "https://h.example/.well-known/oauth-protected-resource/public/mcp"
    root = ProtectedResource(resource="https://h.example/", authorization_servers=["https://as.example"])
    assert root.metadata_path == "/.well-known/oauth-protected-resource"
    assert root.resource == "https://h.example"


def test_document_keeps_issuer_bytes_and_drops_offline_access() -> None:
    pr = ProtectedResource(
        resource="https://h.example/mcp", authorization_servers=["https://as.example/tenant/"],
        scopes_supported=["a", "offline_access", "b", "a"], resource_name="H",
    )
    doc = pr.document()
    assert doc["authorization_servers"] == ["https://as.example/tenant/"]
    assert doc["scopes_supported"] == ["a", "b"]
    assert doc["bearer_methods_supported"] == ["header"]
    assert doc["resource_name"] == "H"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"authorization_servers": []},
        {"authorization_servers": "https://as.example"},
        {"authorization_servers": ["not a url"]},
        {"authorization_servers": ["https://as.example"], "scopes_supported": ['bad"scope']},
        {"authorization_servers": ["https://as.example"], "scopes_supported": ["two words"]},
    ],
)
def test_invalid_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        ProtectedResource(resource="https://h.example/mcp", **kwargs)  # type: ignore[arg-type]
