"""The agent key in the OS keyring (``KeyringKeyStore``, optional extra ``authgate[keyring]``): a small in-memory
backend set with ``keyring.set_keyring`` stands in for the OS keychain; keyring's ``fail`` and ``null`` backends
show that a keyring which cannot keep the key is an error, never a fresh key on every run; a rotated key is
saved back to the keyring. Skipped (with the reason) where the extra is not installed."""

from __future__ import annotations

import json

import pytest

from authgate.agent.agentauth import AgentAuth, AgentKey, KeyringKeyStore, KeyStoreError
from tests.agentauth.test_sdk import counting
from tests.interop.test_aauth_protocol import World, world  # noqa: F401

keyring = pytest.importorskip("keyring", reason="the optional keyring extra is not installed")
from keyring.backend import KeyringBackend  # noqa: E402
from keyring.backends import fail, null  # noqa: E402
from keyring.errors import PasswordDeleteError  # noqa: E402


class MemoryKeyring(KeyringBackend):
    """A keyring that keeps entries in a dict (the test stand-in for the OS keychain)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.entries.pop((service, username), None) is None:
            raise PasswordDeleteError("no such entry")


@pytest.fixture
def memory_keyring(monkeypatch: pytest.MonkeyPatch) -> MemoryKeyring:
    """``keyring.set_keyring`` to an in-memory backend; the process-wide choice is restored afterwards."""
    monkeypatch.setattr(keyring.core, "_keyring_backend", keyring.core._keyring_backend)
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    return backend


def test_keyring_store_keeps_the_key(memory_keyring: MemoryKeyring) -> None:
    store = KeyringKeyStore("journal-bot")
    assert store.load() is None
    key = store.load_or_create()
    assert store.load_or_create().jkt == key.jkt  # the same key on the next run
    stored = memory_keyring.entries[("authgate-agentauth", "journal-bot")]
    assert json.loads(stored)["d"] and json.loads(stored)["x"] == key.public_jwk["x"]
    other = KeyringKeyStore("journal-bot", service="another-app")
    assert other.load() is None  # entries are per service and name
    store.delete()
    assert store.load() is None
    store.delete()  # nothing to delete is fine
    memory_keyring.entries[("authgate-agentauth", "journal-bot")] = '{"kty": "RSA"}'
    with pytest.raises(ValueError, match="Ed25519"):
        store.load()


def test_a_keyring_that_cannot_keep_the_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyring.core, "_keyring_backend", keyring.core._keyring_backend)
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    with pytest.raises(KeyStoreError, match="could not read"):
        KeyringKeyStore("bot").load_or_create()
    # accepts writes, keeps nothing: never a fresh key on every run
    keyring.set_keyring(null.Keyring())  # type: ignore[no-untyped-call]
    with pytest.raises(KeyStoreError, match="did not keep"):
        KeyringKeyStore("bot").load_or_create()


async def test_a_rotated_key_is_saved_to_the_keyring(world: World, memory_keyring: MemoryKeyring  # noqa: F811
                                                     ) -> None:
    w = world
    store = KeyringKeyStore("notes-bot")
    store.save(AgentKey(w.key))
    http, _ = counting(w)
    key = store.load()
    assert key is not None
    auth = AgentAuth(key, w.agent_token, http=http, key_store=store)
    new = AgentKey.generate()
    await auth.refresh_agent_token(new_key=new)
    reloaded = store.load()
    assert reloaded is not None and reloaded.jkt == new.jkt != key.jkt
    record = await w.ctx.store.agentauth.get_agent(w.agent_id)
    assert record is not None and record.jkt == new.jkt
    await http.aclose()


