"""Facilitator verification on the embedded chain: every bad input of issue #3 gets the Python SDK's reason
string with HTTP 200, and nothing is settled for it (ledger and on-chain balances unchanged)."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from authgate.store import Store
from authgate.x402 import errors as e
from authgate.x402 import localchain
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.wire import FacilitatorRequest, PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse

from .facilitator_support import PAY_TO, new_payer, pay, requirements, with_payload

TOKEN = localchain.TOKEN_ADDRESS


@pytest.fixture
def backend() -> str:
    """Verification answers do not depend on the database: SQLite only here (settlement runs on both)."""
    return "sqlite"


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    c = EmbeddedChain()
    yield c
    await c.aclose()


@pytest.fixture
def facilitator(chain: EmbeddedChain, store: Store) -> Facilitator:
    return Facilitator({localchain.NETWORK: chain}, store, settle_timeout=10)


@pytest.fixture
async def http(facilitator: Facilitator) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_facilitator_app(facilitator))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4022") as client:
        yield client


@pytest.fixture
async def payer(chain: EmbeddedChain) -> tuple[str, str]:
    key, address = new_payer()
    await chain.mint(address, 1_000_000)
    return key, address


OTHER = localchain.label_address("someone-else")
Case = Callable[[str, PaymentRequirements], tuple[PaymentPayload, PaymentRequirements]]


def _now() -> int:
    return int(time.time())


CASES: dict[str, tuple[Case, str]] = {
    "wrong network": (lambda k, r: (pay(k, r, accepted=replace(r, network="eip155:84532")), r), e.NETWORK_MISMATCH),
    "network not served": (
        lambda k, r: (pay(k, replace(r, network="eip155:84532"), chain_id=84532), replace(r, network="eip155:84532")),
        e.FAILED_TO_GET_NETWORK_CONFIG),
    "not an EVM network": (
        lambda k, r: (pay(k, replace(r, network="solana:x")), replace(r, network="solana:x")),
        e.FAILED_TO_GET_NETWORK_CONFIG),
    "wrong scheme": (lambda k, r: (pay(k, r, accepted=replace(r, scheme="upto")), r), e.UNSUPPORTED_SCHEME),
    "wrong asset in accepted": (lambda k, r: (pay(k, r, accepted=replace(r, asset="0x" + "ab" * 20)), r),
                                e.INVALID_SIGNATURE),
    "missing EIP-712 domain": (lambda k, r: (pay(k, r), replace(r, extra={})), e.MISSING_EIP712_DOMAIN),
    "wrong payTo": (lambda k, r: (pay(k, r, to=OTHER), r), e.RECIPIENT_MISMATCH),
    "payTo changed in the requirements": (lambda k, r: (pay(k, r), replace(r, pay_to=OTHER)), e.RECIPIENT_MISMATCH),
    "underpayment": (lambda k, r: (pay(k, r, value=9_999), r), e.VALUE_MISMATCH),
    "overpayment": (lambda k, r: (pay(k, r, value=10_001), r), e.VALUE_MISMATCH),
    "expired": (lambda k, r: (pay(k, r, valid_before=_now() + 3), r), e.VALID_BEFORE),
    "expired long ago": (lambda k, r: (pay(k, r, valid_before=_now() - 100), r), e.VALID_BEFORE),
    "longer than maxTimeoutSeconds": (lambda k, r: (pay(k, r, valid_before=_now() + 3600), r), e.VALID_BEFORE),
    "not yet valid": (lambda k, r: (pay(k, r, valid_after=_now() + 120), r), e.VALID_AFTER),
    "signed by someone else": (
        lambda k, r: (with_payload(pay(k, r), **{"from": OTHER}), r), e.INVALID_SIGNATURE),
    "signature over other requirements": (lambda k, r: (pay(k, replace(r, amount="1")), r), e.VALUE_MISMATCH),
    "tampered signature": (lambda k, r: (_tamper(pay(k, r)), r), e.INVALID_SIGNATURE),
    "signature that recovers no key": (
        lambda k, r: (with_payload(pay(k, r), signature="0x" + "11" * 64 + "1b"), r), e.FAILED_TO_VERIFY_SIGNATURE),
    "bad v": (lambda k, r: (_bad_v(pay(k, r)), r), e.FAILED_TO_VERIFY_SIGNATURE),
    "short signature": (lambda k, r: (with_payload(pay(k, r), signature="0x1234"), r),
                        e.FAILED_TO_VERIFY_SIGNATURE),
    "empty signature": (lambda k, r: (with_payload(pay(k, r), signature="0x"), r), e.INVALID_SIGNATURE),
    "malformed scheme payload": (lambda k, r: (with_payload(pay(k, r), value="ten"), r), e.INVALID_PAYLOAD),
    "token domain name differs": (
        lambda k, r: (pay(k, r2 := replace(r, extra={"name": "USD Coin", "version": "2"})), r2), e.INVALID_SIGNATURE),
    "asset is not a contract": (
        lambda k, r: (pay(k, r2 := replace(r, asset="0x" + "cd" * 20)), r2), e.ASSET_NOT_DEPLOYED),
}


def _tamper(p: PaymentPayload) -> PaymentPayload:
    sig = p.payload["signature"]
    return with_payload(p, signature=sig[:70] + ("0" if sig[70] != "0" else "1") + sig[71:])  # a byte of s


def _bad_v(p: PaymentPayload) -> PaymentPayload:
    return with_payload(p, signature=p.payload["signature"][:-2] + "07")


async def _post(http: httpx.AsyncClient, path: str, p: PaymentPayload, r: PaymentRequirements) -> Any:
    response = await http.post(path, content=FacilitatorRequest(p, r).to_json(),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_input_gets_the_sdk_reason_and_settles_nothing(
    case: str, http: httpx.AsyncClient, chain: EmbeddedChain, store: Store, payer: tuple[str, str],
) -> None:
    build, reason = CASES[case]
    key, address = payer
    payload, req = build(key, requirements())
    before = (await chain.balance_of(TOKEN, address), await chain.balance_of(TOKEN, PAY_TO))

    verdict = VerifyResponse.from_dict(await _post(http, "/verify", payload, req))
    assert (verdict.is_valid, verdict.invalid_reason) == (False, reason), verdict
    settled = SettleResponse.from_dict(await _post(http, "/settle", payload, req))
    assert (settled.success, settled.error_reason, settled.transaction) == (False, reason, ""), settled

    assert (await chain.balance_of(TOKEN, address), await chain.balance_of(TOKEN, PAY_TO)) == before
    assert await store.payments.list(status="settled") == []
    assert await store.payments.list(status="submitted") == []


async def test_valid_payment_verifies_and_echoes_the_payer(facilitator: Facilitator, payer: tuple[str, str]) -> None:
    key, address = payer
    req = requirements()
    verdict = await facilitator.verify(pay(key, req), req)
    assert verdict == VerifyResponse(is_valid=True, payer=address)
    # the SDK's own order: an address in another case is the same recipient
    verdict = await facilitator.verify(pay(key, req, to=PAY_TO.lower()), req)
    assert verdict.is_valid


async def test_insufficient_balance(facilitator: Facilitator, chain: EmbeddedChain, store: Store) -> None:
    key, address = new_payer()
    await chain.mint(address, 9_999)
    req = requirements()
    p = pay(key, req)
    assert (await facilitator.verify(p, req)).invalid_reason == e.INSUFFICIENT_BALANCE
    result = await facilitator.settle(p, req)
    assert (result.success, result.error_reason) == (False, e.INSUFFICIENT_BALANCE)
    assert await chain.balance_of(TOKEN, address) == 9_999
    assert [row.status for row in await store.payments.list(payer=address)] == ["failed"]


async def test_reused_nonce(facilitator: Facilitator, chain: EmbeddedChain, payer: tuple[str, str]) -> None:
    key, address = payer
    req = requirements()
    nonce = secrets.token_bytes(32)
    first = pay(key, req, nonce=nonce)
    assert (await facilitator.settle(first, req)).success
    assert (await facilitator.verify(first, req)).invalid_reason == e.NONCE_ALREADY_USED
    # a new authorization reusing the nonce (different value) is refused, and does not get the first receipt
    second_req = requirements(20_000)
    second = pay(key, second_req, nonce=nonce)
    assert (await facilitator.verify(second, second_req)).invalid_reason == e.NONCE_ALREADY_USED
    result = await facilitator.settle(second, second_req)
    assert (result.success, result.error_reason, result.transaction) == (False, e.NONCE_ALREADY_USED, "")
    assert await chain.balance_of(TOKEN, address) == 1_000_000 - 10_000


async def test_nonce_used_outside_the_ledger(facilitator: Facilitator, chain: EmbeddedChain,
                                             payer: tuple[str, str], store: Store) -> None:
    """Someone else submitted the authorization first: settle reconciles from the chain and reports that tx."""
    key, _ = payer
    req = requirements()
    p = pay(key, req)
    other = Facilitator({localchain.NETWORK: chain}, await _fresh_store(store), settle_timeout=10)
    outside = await other.settle(p, req)
    assert outside.success
    result = await facilitator.settle(p, req)
    assert (result.success, result.transaction) == (True, outside.transaction)
    assert [row.tx_hash for row in await store.payments.list()] == [outside.transaction]


async def _fresh_store(store: Store) -> Store:
    """A second, empty ledger on SQLite, standing for a facilitator that does not share our database."""
    import tempfile

    path = tempfile.mkdtemp()
    return await Store.open(f"sqlite+aiosqlite:///{path}/other.db", store.clock)


async def test_http_surface(facilitator: Facilitator, http: httpx.AsyncClient, chain: EmbeddedChain) -> None:
    supported = (await http.get("/supported")).json()
    assert supported == {"kinds": [{"x402Version": 2, "scheme": "exact", "network": localchain.NETWORK}],
                         "extensions": [], "signers": {"eip155:*": [chain.facilitator_address]}}
    for body in (b"", b"{", b"[]", b'{"x402Version":2}', b'{"x402Version":1,"paymentPayload":{},'
                 b'"paymentRequirements":{}}', b"\xff\xfe", b"[" * 100_000):
        response = await http.post("/verify", content=body)
        assert response.status_code in (400, 413), (body[:20], response.status_code)
        assert response.json()["error"] in ("invalid_request", "request_too_large")
        response = await http.post("/settle", content=body)
        assert response.status_code in (400, 413)
    assert (await http.get("/verify")).status_code == 405


async def test_bearer_token(facilitator: Facilitator, payer: tuple[str, str]) -> None:
    app = create_facilitator_app(facilitator, token="s3cret-token")
    req = requirements()
    body = FacilitatorRequest(pay(payer[0], req), req).to_json()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
            response = await client.post("/verify", content=body, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await client.get("/supported")).status_code == 401
        ok = await client.post("/verify", content=body, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["isValid"] is True


async def test_contract_signer_is_refused_with_a_message(facilitator: Facilitator, payer: tuple[str, str]) -> None:
    req = requirements()
    p = with_payload(pay(payer[0], req), **{"from": TOKEN})  # an address with code: EIP-1271 territory
    verdict = await facilitator.verify(p, req)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, e.INVALID_SIGNATURE)
    assert "EIP-1271" in (verdict.invalid_message or "")


async def test_in_process_client_gives_the_same_answers(facilitator: Facilitator, chain: EmbeddedChain,
                                                        payer: tuple[str, str]) -> None:
    from authgate.x402.facilitator import InProcessFacilitatorClient

    client = InProcessFacilitatorClient(facilitator)
    assert (await client.supported()) == facilitator.supported()
    req = requirements()
    p = pay(payer[0], req)
    assert (await client.verify(p, req)).is_valid
    settled = await client.settle(p, req)
    assert settled.success and await chain.balance_of(TOKEN, payer[1]) == 1_000_000 - 10_000


def test_revert_texts_map_to_sdk_reasons() -> None:
    from authgate.x402.exact import map_revert

    assert map_revert("execution reverted: FiatTokenV2: authorization is expired") == e.VALID_BEFORE
    assert map_revert("authorization is not yet valid") == e.VALID_AFTER
    assert map_revert("FiatTokenV2: authorization is used or canceled") == e.NONCE_ALREADY_USED
    assert map_revert("ERC20: transfer amount exceeds balance") == e.INSUFFICIENT_BALANCE
    assert map_revert("ERC20InsufficientBalance(0x…)") == e.INSUFFICIENT_BALANCE
    assert map_revert("FiatTokenV2: invalid signature") == e.INVALID_SIGNATURE
    assert map_revert("Pausable: paused") is None


async def test_unmapped_reverts_are_diagnosed_like_the_sdk() -> None:
    from authgate.x402.chain.base import TransferAuthorization
    from authgate.x402.exact import diagnose

    class Token:
        def __init__(self, used: bool | None, domain: tuple[str, str], balance: int) -> None:
            self.used, self.domain, self.balance = used, domain, balance

        async def authorization_used(self, *_: object) -> bool:
            if self.used is None:
                raise ValueError("execution reverted")  # no authorizationState: not an EIP-3009 token
            return self.used

        async def token_domain(self, _: str) -> tuple[str, str]:
            return self.domain

        async def balance_of(self, *_: object) -> int:
            return self.balance

    t = TransferAuthorization(TOKEN, OTHER, PAY_TO, 100, 0, 2**40, bytes(32), bytes(65))
    cases = [
        (Token(None, ("USDC", "2"), 10**6), e.EIP3009_NOT_SUPPORTED),
        (Token(True, ("USDC", "2"), 10**6), e.NONCE_ALREADY_USED),
        (Token(False, ("USD Coin", "2"), 10**6), e.TOKEN_NAME_MISMATCH),
        (Token(False, ("USDC", "1"), 10**6), e.TOKEN_VERSION_MISMATCH),
        (Token(False, ("USDC", "2"), 99), e.INSUFFICIENT_BALANCE),
        (Token(False, ("USDC", "2"), 100), e.SIMULATION_FAILED),
    ]
    for token, reason in cases:
        assert await diagnose(token, t, "USDC", "2") == reason  # type: ignore[arg-type]


async def test_asset_code_is_cached(chain: EmbeddedChain, store: Store, payer: tuple[str, str]) -> None:
    asked: list[str] = []
    real = chain.code_at

    async def counting(address: str) -> bytes:
        asked.append(address.lower())
        return await real(address)

    chain.code_at = counting  # type: ignore[method-assign]
    facilitator = Facilitator({localchain.NETWORK: chain}, store)
    req = requirements()
    for _ in range(3):
        assert (await facilitator.verify(pay(payer[0], req), req)).is_valid
    assert asked.count(TOKEN.lower()) == 1
    facilitator.asset_cache.ttl = 0  # expired entries are asked again
    facilitator.asset_cache._until.clear()
    assert (await facilitator.verify(pay(payer[0], req), req)).is_valid
    assert asked.count(TOKEN.lower()) == 2
