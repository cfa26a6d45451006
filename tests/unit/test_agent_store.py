"""Token stores: in memory and a 0600 JSON file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from authgate.agent import ClientRegistration, FileTokenStore, MemoryTokenStore, TokenSet, TokenStore

REG = ClientRegistration(
    "cid", "secret", "client_secret_basic", issuer="https://as", client_secret_expires_at=0, redirect_uris=("http://x",)
)
TOK = TokenSet("at", expires_at=123.5, refresh_token="rt", scope="a b")


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> TokenStore:
    return MemoryTokenStore() if request.param == "memory" else FileTokenStore(tmp_path / "d" / "tokens.json")


async def test_round_trip_and_delete(store: TokenStore) -> None:
    assert isinstance(store, TokenStore)
    assert await store.get_client("https://as") is None
    await store.set_client("https://as", REG)
    await store.set_tokens("https://as", "https://r/1", TOK)
    await store.set_tokens("https://as", "https://r/2", TokenSet("other"))
    assert await store.get_client("https://as") == REG
    assert await store.get_tokens("https://as", "https://r/1") == TOK
    assert await store.get_tokens("https://other-as", "https://r/1") is None
    await store.set_tokens("https://as", "https://r/1", None)
    assert await store.get_tokens("https://as", "https://r/1") is None
    assert await store.get_tokens("https://as", "https://r/2") == TokenSet("other")
    await store.set_client("https://as", None)
    assert await store.get_client("https://as") is None


async def test_file_store_is_private_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokens.json"
    store = FileTokenStore(path)
    await store.set_client("https://as", REG)
    await store.set_tokens("https://as", "https://r", TOK)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    again = FileTokenStore(path)
    assert await again.get_client("https://as") == REG
    assert await again.get_tokens("https://as", "https://r") == TOK
    assert json.loads(path.read_text())["tokens"]["https://as"]["https://r"]["scope"] == "a b"
    assert [p.name for p in path.parent.iterdir()] == ["tokens.json"]  # no temp files left behind


async def test_file_store_tightens_loose_permissions(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{}")
    path.chmod(0o644)
    await FileTokenStore(path).set_tokens("https://as", "https://r", TOK)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_file_store_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("[1]")
    with pytest.raises(ValueError):
        await FileTokenStore(path).get_client("x")


def test_reprs_hide_secrets() -> None:
    assert "secret" not in repr(REG).replace("client_secret_", "")
    assert "'at'" not in repr(TOK) and "'rt'" not in repr(TOK)


def test_from_json_ignores_unknown_fields() -> None:
    assert ClientRegistration.from_json({**REG.to_json(), "future": 1}) == REG
    assert TokenSet.from_json({**TOK.to_json(), "future": 1}) == TOK
