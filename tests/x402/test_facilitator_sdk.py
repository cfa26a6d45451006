"""Interop: the official x402 2.25.0 SDK as the peer of our facilitator, over real HTTP on loopback.

The SDK's client signs the payment; the SDK's ``HTTPFacilitatorClient`` calls our ``/verify``, ``/settle`` and
``/supported`` and parses every answer with its own models; settlement moves balances on the embedded chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from eth_account import Account

from authgate.store import Store
from authgate.x402 import errors as e
from authgate.x402 import localchain
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator.client import FacilitatorClient
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.wire import PaymentPayload as OurPayload
from authgate.x402.wire import PaymentRequired

from ..servers import free_port, serve
from .facilitator_support import PAY_TO, RESOURCE, new_payer, requirements

pytestmark = pytest.mark.interop
TOKEN = localchain.TOKEN_ADDRESS


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    c = EmbeddedChain()
    yield c
    await c.aclose()


@pytest.fixture
async def base_url(chain: EmbeddedChain, store: Store) -> AsyncIterator[str]:
    app = create_facilitator_app(Facilitator({localchain.NETWORK: chain}, store, settle_timeout=30),
                                 token="tok-123")
    async with serve(app, free_port()) as url:
        yield url


def _sdk_facilitator(url: str) -> object:
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.http.facilitator_client_base import AuthHeaders

    class Auth:
        def get_auth_headers(self) -> AuthHeaders:
            bearer = {"Authorization": "Bearer tok-123"}
            return AuthHeaders(verify=bearer, settle=bearer, supported=bearer)

    return HTTPFacilitatorClient(FacilitatorConfig(url=url, auth_provider=Auth()))


async def _sdk_payment(key: str) -> tuple[object, object]:
    """The SDK client's payment for our offer on the embedded chain (SDK objects)."""
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.schemas import PaymentRequired as SdkPaymentRequired

    from x402 import x402Client

    required = PaymentRequired(accepts=(requirements(),), resource=RESOURCE, error="Payment required")
    sdk_required = SdkPaymentRequired.model_validate_json(required.to_json())
    client = x402Client()
    register_exact_evm_client(client, Account.from_key(key))
    client.set_spend_controls(False)  # our test token is not one of the SDK's default assets
    payload = await client.create_payment_payload(sdk_required)
    return payload, sdk_required.accepts[0]


async def test_sdk_http_facilitator_client_verifies_and_settles_through_us(
        base_url: str, chain: EmbeddedChain, store: Store) -> None:
    key, address = new_payer()
    await chain.mint(address, 50_000)
    payload, reqs = await _sdk_payment(key)
    sdk = _sdk_facilitator(base_url)

    supported = await asyncio.to_thread(sdk.get_supported)  # type: ignore[attr-defined]  # sync httpx inside
    assert [(k.x402_version, k.scheme, k.network) for k in supported.kinds] == [(2, "exact", localchain.NETWORK)]
    assert supported.signers == {"eip155:*": [chain.facilitator_address]}

    verdict = await sdk.verify(payload, reqs)  # type: ignore[attr-defined]
    assert (verdict.is_valid, verdict.payer) == (True, address)
    before = await chain.balance_of(TOKEN, PAY_TO)
    settled = await sdk.settle(payload, reqs)  # type: ignore[attr-defined]
    assert settled.success and settled.transaction.startswith("0x") and settled.network == localchain.NETWORK
    assert await chain.balance_of(TOKEN, PAY_TO) == before + 10_000
    assert await chain.balance_of(TOKEN, address) == 40_000

    # replay: verify says the nonce is used; settle answers the first receipt again (idempotent)
    again = await sdk.verify(payload, reqs)  # type: ignore[attr-defined]
    assert (again.is_valid, again.invalid_reason) == (False, e.NONCE_ALREADY_USED)
    repeat = await sdk.settle(payload, reqs)  # type: ignore[attr-defined]
    assert (repeat.success, repeat.transaction) == (True, settled.transaction)
    await sdk.aclose()  # type: ignore[attr-defined]


async def test_sdk_client_gets_reasons_for_invalid_payments(base_url: str, chain: EmbeddedChain) -> None:
    key, address = new_payer()
    await chain.mint(address, 5_000)  # too little
    payload, reqs = await _sdk_payment(key)
    sdk = _sdk_facilitator(base_url)
    verdict = await sdk.verify(payload, reqs)  # type: ignore[attr-defined]
    assert (verdict.is_valid, verdict.invalid_reason) == (False, e.INSUFFICIENT_BALANCE)
    settled = await sdk.settle(payload, reqs)  # type: ignore[attr-defined]
    assert (settled.success, settled.error_reason, settled.transaction) == (False, e.INSUFFICIENT_BALANCE, "")
    other = reqs.model_copy(update={"pay_to": localchain.label_address("other")})  # type: ignore[attr-defined]
    verdict = await sdk.verify(payload, other)  # type: ignore[attr-defined]
    assert verdict.invalid_reason == e.RECIPIENT_MISMATCH
    await sdk.aclose()  # type: ignore[attr-defined]


async def test_our_http_client_against_our_facilitator_and_the_sdk_payload(
        base_url: str, chain: EmbeddedChain) -> None:
    key, address = new_payer()
    await chain.mint(address, 50_000)
    payload, _ = await _sdk_payment(key)
    ours = OurPayload.from_json(payload.model_dump_json(by_alias=True, exclude_none=True))  # type: ignore[attr-defined]
    async with FacilitatorClient(base_url, token="tok-123") as client:
        assert (await client.supported()).supports("exact", localchain.NETWORK)
        assert (await client.verify(ours, ours.accepted)).is_valid
        assert (await client.settle(ours, ours.accepted)).success
    from authgate.x402.facilitator.client import FacilitatorUnavailable

    async with FacilitatorClient(base_url, token="wrong") as client:
        with pytest.raises(FacilitatorUnavailable):
            await client.supported()
    async with FacilitatorClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(FacilitatorUnavailable):
            await client.verify(ours, ours.accepted)
