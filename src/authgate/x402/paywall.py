"""The x402 paywall: price a route, answer ``402`` with offers, verify and settle payments through a facilitator.

Two ways to use it, one engine (spec note §2, authgate profile §12)::

    paywall = Paywall(facilitator, base_url="https://api.example")      # public origin: from config, never
                                                                        # from the (maybe proxied) request
    paywall.route("/weather", price="$0.01", pay_to=PAYEE, network="eip155:8453")
    app.add_middleware(PaywallMiddleware, paywall=paywall)             # or app = PaywallMiddleware(app, ...)

    @app.get("/forecast")                                              # FastAPI dependency (needs the
    async def forecast(paid: Payment = Depends(paywall.require(        # middleware too: it settles)
            price="$0.05", pay_to=PAYEE, network="eip155:8453"))): ...

Per paid request: decode ``PAYMENT-SIGNATURE``; ``accepted`` must equal one of the route's offers exactly
(scheme, network, amount, asset, payTo, maxTimeoutSeconds as exact strings; our ``extra`` a subset of theirs);
``/verify``; run the handler with its response **buffered** (bounded by ``max_buffer``); ``/settle`` only if
the status is below 400 (one retry on ``settlement_pending``); then the response with ``PAYMENT-RESPONSE``.
With ``upfront=True`` the payment is settled before the handler runs. Answers:

====================================  =========================================================================
unpaid / undecodable header           402, ``PAYMENT-REQUIRED`` (``error``: ``Payment required`` /
                                      ``invalid_payload``), body ``{}``, ``Cache-Control: no-store``
``accepted`` is not an offer          402, ``error``: ``No matching payment requirements``
facilitator says invalid              402, ``error``: its ``invalidReason``
facilitator unreachable / broken      402, ``error``: ``facilitator_unavailable``, ``Retry-After: 5``; nothing
                                      served, nothing settled (never a 5xx: the request was not paid for)
handler status >= 400 or raises       passed through (or raised); nothing settled
settlement fails                      402, ``PAYMENT-RESPONSE`` with ``success: false``, body ``{}``
the same PAYMENT-SIGNATURE after a    served once more, with the receipt of the transfer that did land (the
settlement of unknown outcome         facilitator's idempotent ``/settle``; nothing sent twice); see below
response larger than ``max_buffer``   500 ``{"error": "response_too_large"}``; nothing settled
====================================  =========================================================================

Extensions: ``payment_identifier=False|True`` declares ``payment-identifier`` (optional / required); a retry
carrying the id of a settled payment, signed by the same payer, is answered from the first settlement and not
charged again (409 while the first attempt is still in flight, or when another payer uses the id).
``siwx=True`` declares ``sign-in-with-x``: a wallet that paid for the resource within ``siwx_access_seconds``
gets in again with a signature alone. Both keep their state in a :class:`PaywallStore` (memory by default;
:class:`~authgate.x402.paywall_store.DatabasePaywallStore` across processes).

**A settlement of unknown outcome** (``unexpected_settle_error`` or ``settlement_pending``: the facilitator died,
timed out or could not tell) is answered 402 and the handler's answer withheld, yet the transfer may still land on
chain. The paywall remembers that authorization (per resource, in its store, until ``validBefore``); when the
agent re-sends the same ``PAYMENT-SIGNATURE`` and ``/verify`` says ``invalid_exact_evm_nonce_already_used``, one
such retry at a time is let through to ``/settle``, which answers from the facilitator's ledger (reconciled with
the chain) and never submits twice: the agent gets the transfer's receipt and the resource. Once delivered, the
same signature again is a replay and refused as before.

The handler finds a :class:`Payment` in ``request.state.x402`` (payload, matched requirements, payer, and the
receipt for upfront payments or answers from an earlier settlement).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgate.ops.decisions import Tally, outcome_of
from authgate.trust.errors import TrustError
from authgate.x402 import errors as reasons
from authgate.x402 import wire
from authgate.x402.errors import X402WireError
from authgate.x402.extensions import payment_identifier as pid
from authgate.x402.extensions import siwx
from authgate.x402.paywall_store import MemoryPaywallStore, PaywallStore, store_key
from authgate.x402.price import Price, parse_price

if TYPE_CHECKING:
    from authgate.ops.metrics import Metrics

logger = logging.getLogger("authgate.x402.paywall")

STATE_KEY = "x402"
_EXCHANGE_KEY = "x402.exchange"
PAYMENT_REQUIRED_ERROR = "Payment required"
NO_MATCH_ERROR = "No matching payment requirements"
#: ``error`` of the 402 answered when the facilitator is unreachable or broken (with ``Retry-After``).
FACILITATOR_UNAVAILABLE_ERROR = "facilitator_unavailable"
RETRY_AFTER_SECONDS = 5
EXPOSE = "PAYMENT-REQUIRED, PAYMENT-RESPONSE"
Flow = Literal["authorization", "upfront"]


class Facilitator(Protocol):
    """What the paywall needs of a facilitator: our in-process one, our HTTP client, or any look-alike.
    Raising means "unreachable or broken"; an answer with ``is_valid``/``success`` false is a verdict."""

    async def verify(self, payload: wire.PaymentPayload,
                     requirements: wire.PaymentRequirements) -> wire.VerifyResponse: ...

    async def settle(self, payload: wire.PaymentPayload,
                     requirements: wire.PaymentRequirements) -> wire.SettleResponse: ...


@dataclass(frozen=True)
class Payment:
    """What a paid (or signed-in) request carries to its handler as ``request.state.x402``."""

    payer: str
    requirements: wire.PaymentRequirements | None
    payload: wire.PaymentPayload | None
    #: The settlement receipt when known before the handler (upfront flow, answers from an earlier settlement).
    receipt: wire.SettleResponse | None = None
    #: ``payment-identifier`` id of the payment, when the client sent one.
    payment_id: str | None = None
    #: True when access came from a sign-in-with-x signature of a wallet that paid before.
    signed_in: bool = False


@dataclass(frozen=True)
class PricedRoute:
    """One priced path: the offers (``accepts``) and what the 402 says about the resource."""

    path: str
    methods: frozenset[str] | None
    accepts: tuple[wire.PaymentRequirements, ...]
    description: str = ""
    mime_type: str = "application/json"
    #: Explicit resource URL; default: the paywall's ``base_url`` + the request path.
    resource: str | None = None
    flow: Flow = "authorization"
    #: None: the payment-identifier extension is not declared; False: optional; True: required.
    payment_identifier: bool | None = None
    siwx: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path.endswith("/*"):
            base = self.path[:-2]
            return path == base or path.startswith(base + "/")
        return path.rstrip("/") == self.path.rstrip("/") or path == self.path


class _Answer(Exception):
    """A final answer decided before the handler (402, 400, 409, ...). An exception so that the FastAPI
    dependency can stop the request; the middleware renders it."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes, outcome: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body
        #: The access-decision outcome (authgate.ops.decisions) when the status alone does not say it.
        self.outcome = outcome or outcome_of(status, headers)


def _json_answer(status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> _Answer:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", **(extra or {})}
    return _Answer(status, headers, json.dumps(body).encode())


@dataclass
class _Pending:
    """A verified payment whose settlement waits for the handler's answer."""

    route: PricedRoute
    payload: wire.PaymentPayload
    requirements: wire.PaymentRequirements
    payment: Payment
    resource_url: str
    pid_key: str | None = None
    settle_now: bool = True
    receipt: wire.SettleResponse | None = None
    #: From the trust guard: gives back what it counted when the payment does not happen (authgate.trust); its
    #: optional ``settled(receipt)`` is awaited once the payment settled (the trust audit log).
    on_release: Callable[[], Awaitable[None]] | None = None
    #: A retry of an authorization whose settlement had an unknown outcome: the claim this request holds.
    recovering: str | None = None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _same_offer(offer: wire.PaymentRequirements, accepted: wire.PaymentRequirements) -> bool:
    """Spec §2 step 7: exact, case-sensitive equality; our ``extra`` must be a subset of theirs."""
    return (offer.scheme == accepted.scheme and offer.network == accepted.network
            and offer.amount == accepted.amount and offer.asset == accepted.asset
            and offer.pay_to == accepted.pay_to and offer.max_timeout_seconds == accepted.max_timeout_seconds
            and all(k in accepted.extra and accepted.extra[k] == v for k, v in offer.extra.items()))


class Paywall:
    """Priced routes plus the facilitator and store they share. ``base_url``: the public origin agents use
    (``https://api.example``); resource URLs in offers are built from it, never from request headers."""

    def __init__(
        self,
        facilitator: Facilitator,
        *,
        base_url: str,
        store: PaywallStore | None = None,
        clock: Callable[[], float] = time.time,
        max_buffer: int = 8 * 1024 * 1024,
        payment_id_ttl: int = 24 * 3600,
        siwx_key: bytes | None = None,
        siwx_access_seconds: int = 24 * 3600,
        siwx_statement: str | None = "Sign in to use what you paid for",
        guard: Callable[[Scope, wire.PaymentRequirements, str], Awaitable[Callable[[], Awaitable[None]] | None]]
        | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"base_url must be an absolute http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.facilitator = facilitator
        self.clock = clock
        self.store: PaywallStore = store if store is not None else MemoryPaywallStore(clock)
        self.max_buffer = max_buffer
        self.payment_id_ttl = payment_id_ttl
        self.siwx_access_seconds = siwx_access_seconds
        origin = f"{parts.scheme}://{parts.netloc}"
        self.siwx = siwx.Challenger(origin, siwx_key or secrets.token_bytes(32), statement=siwx_statement)
        self.routes: list[PricedRoute] = []
        #: Trust checks before /verify (authgate.trust.paywall.PaymentTrustGuard): kill switch, attestations,
        #: mandate, budget; raises TrustError to refuse, returns what undoes its counting.
        self.guard = guard
        #: Where decisions (``authgate_access_decisions``) and settlements (``authgate_paywall_settlements``) are
        #: counted; None: nowhere.
        self.metrics = metrics

    # -- configuration ---------------------------------------------------------------------------------------

    def offer(self, price: Price, pay_to: str, network: str, *, asset: str | None = None,
              extra: dict[str, Any] | None = None, max_timeout_seconds: int = 60,
              flow: Flow = "authorization") -> wire.PaymentRequirements:
        """One ``exact`` offer. ``price`` in money (``"$0.01"``) uses the network's default stablecoin; with
        ``asset`` the price must be atomic units (``{"amount": "10000", "asset": ..., "extra": ...}`` or an
        int) and ``extra`` names the token's EIP-712 domain (``{"name": ..., "version": ...}``)."""
        if not isinstance(pay_to, str) or not pay_to.startswith("0x") or len(pay_to) != 42:
            raise ValueError(f"pay_to must be a 0x-prefixed EVM address: {pay_to!r}")
        if not 1 <= max_timeout_seconds <= 3600:
            raise ValueError("max_timeout_seconds must be between 1 and 3600")
        if asset is not None:
            amount = price if isinstance(price, int) else None
            if amount is None or isinstance(amount, bool) or amount < 0:
                raise ValueError("with an explicit asset, price must be an int of atomic units")
            price = {"amount": str(amount), "asset": asset, "extra": extra or {}}
        parsed = parse_price(price, network)
        offer_extra = dict(parsed.extra)
        if extra and asset is None:
            offer_extra.update(extra)
        if flow == "upfront":
            offer_extra["paymentFlow"] = "upfront"
        elif flow != "authorization":
            raise ValueError(f"unknown payment flow {flow!r}")
        return wire.PaymentRequirements(scheme="exact", network=network, asset=parsed.asset, amount=parsed.amount,
                                        pay_to=pay_to, max_timeout_seconds=max_timeout_seconds, extra=offer_extra)

    def priced(self, path: str, price: Price | None = None, pay_to: str | None = None, network: str | None = None,
               *, methods: Iterable[str] | None = None, accepts: Iterable[wire.PaymentRequirements] = (),
               asset: str | None = None, extra: dict[str, Any] | None = None, description: str = "",
               mime_type: str = "application/json", max_timeout_seconds: int = 60, resource: str | None = None,
               upfront: bool = False, payment_identifier: bool | None = None, siwx: bool = False) -> PricedRoute:
        """A :class:`PricedRoute` (not registered): one offer from ``price``/``pay_to``/``network``, and/or
        several ready-made ``accepts`` (see :meth:`offer`)."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        flow: Flow = "upfront" if upfront else "authorization"
        offers = list(accepts)
        if price is not None:
            if pay_to is None or network is None:
                raise ValueError("a price needs pay_to and network")
            offers.append(self.offer(price, pay_to, network, asset=asset, extra=extra,
                                     max_timeout_seconds=max_timeout_seconds, flow=flow))
        if not offers:
            raise ValueError("a priced route needs at least one offer")
        if resource is not None and urlsplit(resource).scheme not in ("http", "https"):
            raise ValueError(f"resource must be an absolute http(s) URL: {resource!r}")
        method_set = None
        if methods is not None:
            method_set = {m.upper() for m in methods}
            if "GET" in method_set:
                method_set.add("HEAD")
        return PricedRoute(path, frozenset(method_set) if method_set is not None else None, tuple(offers),
                           description, mime_type, resource, flow, payment_identifier, siwx)

    def route(self, path: str, price: Price | None = None, pay_to: str | None = None, network: str | None = None,
              **options: Any) -> PricedRoute:
        """Price ``path`` (exact, or ``/prefix/*``) for :class:`PaywallMiddleware`; first match wins."""
        priced = self.priced(path, price, pay_to, network, **options)
        self.routes.append(priced)
        return priced

    def require(self, price: Price | None = None, pay_to: str | None = None, network: str | None = None,
                **options: Any) -> Callable[..., Awaitable[Payment]]:
        """A FastAPI dependency pricing the route it is attached to; returns the :class:`Payment`. The
        :class:`PaywallMiddleware` must wrap the app (it settles after the handler)."""
        priced = self.priced("/*", price, pay_to, network, **options)

        async def dependency(request: Request) -> Payment:
            exchange = request.scope.get("state", {}).get(_EXCHANGE_KEY)
            if not isinstance(exchange, _Exchange) or exchange.paywall is not self:
                raise RuntimeError("Paywall.require() needs PaywallMiddleware(app, paywall=<the same paywall>)")
            try:
                return await exchange.charge(priced)
            except _Answer as answer:
                # Stop the handler with an exception FastAPI renders quietly; the middleware discards that
                # rendering and sends this answer instead (it works whichever way the middleware is installed).
                exchange.answer = answer
                raise HTTPException(status_code=answer.status) from None

        return dependency

    # -- the 402 ---------------------------------------------------------------------------------------------

    def resource_url(self, route: PricedRoute, path: str) -> str:
        if route.resource:
            return route.resource
        return self.base_url + (route.path if not route.path.endswith("/*") else path)

    def payment_required(self, route: PricedRoute, resource_url: str, error: str) -> wire.PaymentRequired:
        extensions: dict[str, Any] = {}
        if route.payment_identifier is not None:
            extensions[pid.PAYMENT_IDENTIFIER] = pid.declare(route.payment_identifier)
        if route.siwx:
            networks = [o.network for o in route.accepts]
            extensions[siwx.SIGN_IN_WITH_X] = self.siwx.declare(resource_url, networks, self.clock())
        resource = wire.ResourceInfo(url=resource_url, description=route.description or None,
                                     mime_type=route.mime_type or None)
        return wire.PaymentRequired(accepts=route.accepts, resource=resource, error=error,
                                    extensions=extensions or None)

    def challenge(self, route: PricedRoute, resource_url: str, error: str = PAYMENT_REQUIRED_ERROR) -> _Answer:
        required = self.payment_required(route, resource_url, error)
        return _Answer(402, {"Content-Type": "application/json", "Cache-Control": "no-store",
                             wire.HEADER_PAYMENT_REQUIRED: required.to_header(),
                             "Access-Control-Expose-Headers": EXPOSE}, b"{}")

    def unavailable(self, route: PricedRoute, resource_url: str) -> _Answer:
        """The facilitator gave no usable answer: a fresh 402 whose ``error`` says so, plus ``Retry-After``.
        Not a 5xx (issue #3): the request was simply not paid for, and it is what the official SDK's server
        answers when its facilitator client raises. Nothing was verified, so nothing is served or settled; the
        client's authorization was never used and stays valid until ``validBefore``."""
        answer = self.challenge(route, resource_url, FACILITATOR_UNAVAILABLE_ERROR)
        answer.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        answer.outcome = "error"
        return answer

    # -- settlement --------------------------------------------------------------------------------------------

    async def _settle(self, pending: _Pending) -> wire.SettleResponse:
        """``/settle``, retried once (same payload) on ``settlement_pending``; an exception becomes
        ``unexpected_settle_error`` (the facilitator's own idempotency makes a later retry safe)."""
        try:
            result = await self.facilitator.settle(pending.payload, pending.requirements)
            if not result.success and result.error_reason == "settlement_pending":
                result = await self.facilitator.settle(pending.payload, pending.requirements)
        except Exception as exc:
            logger.warning("x402 settle failed: %s", exc.__class__.__name__)
            result = wire.SettleResponse(success=False, transaction="", network=pending.requirements.network,
                                         payer=pending.payment.payer, error_reason=reasons.UNEXPECTED_SETTLE_ERROR)
        self.count_settlement(pending.requirements.network,
                              "settled" if result.success else result.error_reason or "failed")
        return result

    def count_settlement(self, network: str, outcome: str) -> None:
        """Count one settlement outcome. ``network`` comes from our own offers; a reason another facilitator
        made up counts as ``other``, so labels stay bounded whatever it answers."""
        if self.metrics is not None:
            known = outcome in ("settled", "failed", "skipped") or outcome in _SETTLE_REASONS
            self.metrics.paywall_settlements.labels(network, outcome if known else "other").inc()

    async def _settled(self, pending: _Pending, receipt: wire.SettleResponse) -> None:
        """Remember a successful settlement for the extensions."""
        if pending.pid_key is not None:
            await self.store.put(pending.pid_key, {"state": "settled", "payer": pending.payment.payer.lower(),
                                                   "receipt": receipt.to_dict()}, self.payment_id_ttl)
        if pending.route.siwx:
            await self.store.put(store_key("siwx-paid", pending.resource_url, pending.payment.payer.lower()),
                                 {"tx": receipt.transaction}, self.siwx_access_seconds)
        settled = getattr(pending.on_release, "settled", None)
        if settled is not None:
            try:
                await settled(receipt)
            except Exception as exc:  # a record of the payment; the payment itself is done
                logger.warning("x402: the trust guard's settlement hook failed: %s", exc.__class__.__name__)

    async def _release(self, pending: _Pending) -> None:
        if pending.receipt is None and pending.on_release is not None:
            release, pending.on_release = pending.on_release, None
            await release()
        if pending.pid_key is not None and pending.receipt is None:
            await self.store.delete(pending.pid_key)
        if pending.recovering is not None and pending.receipt is None:
            claim, pending.recovering = pending.recovering, None
            await self.store.delete(claim)  # another retry may try again

    # -- settlements of unknown outcome ----------------------------------------------------------------------

    async def _settle_failed(self, pending: _Pending, receipt: wire.SettleResponse) -> None:
        """A failed settlement: if its outcome is unknown (the transfer may still be mined), remember the
        authorization so that a retry of the same signature can collect it; if it definitely failed, forget it."""
        key = _unsettled_key(pending)
        if key is None:
            return
        if receipt.error_reason in _SETTLE_ERRORS:
            ttl = _seconds_left(pending.payload, self.clock(), self.payment_id_ttl)
            await self.store.put(key, {"payer": pending.payment.payer.lower()}, ttl)
        elif pending.recovering is not None:
            await self.store.delete(key)

    async def _claim_unsettled(self, pending: _Pending) -> bool:
        """This authorization's earlier settlement had an unknown outcome and nobody else is collecting it now:
        claim it (until this request is done) and let it through to ``/settle``."""
        key = _unsettled_key(pending)
        if key is None:
            return False
        earlier = await self.store.get(key)
        if earlier is None or earlier.get("payer") != pending.payment.payer.lower():
            return False
        claim = store_key("unsettled-claim", key)
        if not await self.store.add(claim, {}, 300):
            return False
        pending.recovering = claim
        return True

    async def _collected(self, pending: _Pending) -> None:
        """A retry collected its settlement and is being answered: later copies of the signature are replays."""
        if pending.recovering is not None:
            key = _unsettled_key(pending)
            if key is not None:
                await self.store.delete(key)
            claim, pending.recovering = pending.recovering, None
            await self.store.delete(claim)


def _authorization_nonce(payload: wire.PaymentPayload) -> str | None:
    authorization = payload.payload.get("authorization")
    nonce = authorization.get("nonce") if isinstance(authorization, dict) else None
    return nonce.lower() if isinstance(nonce, str) and 0 < len(nonce) <= 80 else None


def _unsettled_key(pending: _Pending) -> str | None:
    """The store key of one authorization (payer, nonce, asset, network) for one resource."""
    nonce = _authorization_nonce(pending.payload)
    if nonce is None:
        return None
    req = pending.requirements
    return store_key("unsettled", pending.resource_url, req.network, req.asset.lower(),
                     pending.payment.payer.lower(), nonce)


def _seconds_left(payload: wire.PaymentPayload, now: float, default: int) -> int:
    """Until the authorization's ``validBefore`` (after it the chain refuses it, and /verify says so first)."""
    authorization = payload.payload.get("authorization")
    before = authorization.get("validBefore") if isinstance(authorization, dict) else None
    try:
        left = int(str(before)) - int(now)
    except ValueError:
        return default
    return max(1, min(left + 1, default))


class _Exchange:
    """One request's passage through the paywall (created by the middleware, used by the dependency)."""

    def __init__(self, paywall: Paywall, scope: Scope) -> None:
        self.paywall = paywall
        self.scope = scope
        self.pending: _Pending | None = None
        self.charged = False
        #: Set by the dependency when it refused the request (the middleware sends it).
        self.answer: _Answer | None = None

    async def charge(self, route: PricedRoute) -> Payment:
        """Everything before the handler; returns the Payment or raises :class:`_Answer`. Records the access
        decision: mechanism ``x402`` when the request carried a payment or a sign-in, else ``none``."""
        if self.charged:
            raise RuntimeError("a request can be charged once")
        self.charged = True
        tally = Tally(self.paywall.metrics, self.scope)
        presented = _header(self.scope, b"payment-signature") is not None or \
            _header(self.scope, b"sign-in-with-x") is not None
        mechanism = "x402" if presented else "none"
        try:
            payment = await self._charge(route)
        except _Answer as answer:
            tally.record(mechanism, answer.outcome)
            raise
        except BaseException:
            tally.record(mechanism, "error")
            raise
        tally.record("x402", "allowed")
        return payment

    async def _charge(self, route: PricedRoute) -> Payment:
        pw = self.paywall
        path = self.scope.get("path", "/")
        resource_url = pw.resource_url(route, path)

        if route.siwx:
            signed = await self._sign_in(route, resource_url)
            if signed is not None:
                self._set_state(signed)
                return signed

        header = _header(self.scope, b"payment-signature")
        if header is None:
            raise pw.challenge(route, resource_url)
        try:
            payload = wire.PaymentPayload.from_header(header)
        except X402WireError as exc:
            raise pw.challenge(route, resource_url, exc.reason) from None
        requirements = next((o for o in route.accepts if _same_offer(o, payload.accepted)), None)
        if requirements is None:
            raise pw.challenge(route, resource_url, NO_MATCH_ERROR)
        authorization = payload.payload.get("authorization")
        claimed = authorization.get("from") if isinstance(authorization, dict) else None
        if not isinstance(claimed, str) or len(claimed) != 42:
            raise pw.challenge(route, resource_url, "invalid_payload")

        payment_id: str | None = None
        pid_key: str | None = None
        if route.payment_identifier is not None:
            try:
                payment_id = pid.extract(payload.extensions, required=route.payment_identifier)
            except pid.PaymentIdentifierError as exc:
                raise _json_answer(400, {"error": "invalid_payment_identifier", "error_description": str(exc)},
                                   {"Access-Control-Expose-Headers": EXPOSE}) from None
        if payment_id is not None:
            pid_key = store_key("pid", resource_url, payment_id)
            earlier = await pw.store.get(pid_key)
            if earlier is not None:
                return await self._answer_from_earlier(route, resource_url, payload, requirements, payment_id,
                                                       claimed, earlier)
            if not await pw.store.add(pid_key, {"state": "pending", "payer": claimed.lower()}, 600):
                raise _json_answer(409, {"error": "payment_in_progress",
                                         "error_description": "a payment with this id is being processed"},
                                   {"Retry-After": "1"})

        payment = Payment(payer=claimed, requirements=requirements, payload=payload, payment_id=payment_id)
        pending = _Pending(route, payload, requirements, payment, resource_url, pid_key)
        if pw.guard is not None:
            try:
                pending.on_release = await pw.guard(self.scope, requirements, claimed)
            except TrustError as exc:
                await pw._release(pending)
                expose = ", ".join([EXPOSE, *exc.headers])
                raise _json_answer(exc.status, exc.body(), {**exc.headers, "Access-Control-Expose-Headers": expose}
                                   ) from None
        try:
            verdict = await pw.facilitator.verify(payload, requirements)
        except Exception as exc:
            await pw._release(pending)
            logger.warning("x402 verify failed: facilitator unavailable (%s)", exc.__class__.__name__)
            raise pw.unavailable(route, resource_url) from None
        if not verdict.is_valid and not (verdict.invalid_reason == reasons.NONCE_ALREADY_USED
                                         and await pw._claim_unsettled(pending)):
            await pw._release(pending)
            raise pw.challenge(route, resource_url, verdict.invalid_reason or "invalid_payment")
        if verdict.payer and verdict.payer.lower() != claimed.lower():
            await pw._release(pending)
            raise pw.challenge(route, resource_url, "invalid_payload")

        if route.flow == "upfront":
            receipt = await pw._settle(pending)
            if not receipt.success:
                await pw._settle_failed(pending, receipt)
                await pw._release(pending)
                raise _settle_failure(receipt)
            pending.receipt = receipt
            pending.settle_now = False
            await pw._settled(pending, receipt)
            await pw._collected(pending)
            payment = Payment(payer=claimed, requirements=requirements, payload=payload, receipt=receipt,
                              payment_id=payment_id)
            pending.payment = payment
        self.pending = pending
        self._set_state(payment)
        return payment

    async def _answer_from_earlier(self, route: PricedRoute, resource_url: str, payload: wire.PaymentPayload,
                                   requirements: wire.PaymentRequirements, payment_id: str, claimed: str,
                                   earlier: dict[str, Any]) -> Payment:
        """A retried payment id: never charge again. The same payer (proven by a valid signature over this
        payload, checked by ``/verify`` which moves no money) gets the first receipt; anyone else a 409."""
        pw = self.paywall
        if earlier.get("state") != "settled":
            raise _json_answer(409, {"error": "payment_in_progress",
                                     "error_description": "a payment with this id is being processed"},
                               {"Retry-After": "1"})
        if earlier.get("payer") != claimed.lower():
            raise _json_answer(409, {"error": "payment_identifier_conflict",
                                     "error_description": "this payment id belongs to another payment"})
        try:
            verdict = await pw.facilitator.verify(payload, requirements)
        except Exception as exc:
            logger.warning("x402 verify failed: facilitator unavailable (%s)", exc.__class__.__name__)
            raise pw.unavailable(route, resource_url) from None
        # A retry of the very same authorization is "nonce already used" on chain: that still proves the payer.
        proven = verdict.is_valid or verdict.invalid_reason == "invalid_exact_evm_nonce_already_used"
        if not proven or (verdict.payer and verdict.payer.lower() != claimed.lower()):
            raise pw.challenge(route, resource_url, verdict.invalid_reason or "invalid_payment")
        receipt = wire.SettleResponse.from_dict(earlier["receipt"])
        payment = Payment(payer=claimed, requirements=requirements, payload=payload, receipt=receipt,
                          payment_id=payment_id)
        self.pending = _Pending(route, payload, requirements, payment, resource_url, None, settle_now=False,
                                receipt=receipt)
        self._set_state(payment)
        return payment

    async def _sign_in(self, route: PricedRoute, resource_url: str) -> Payment | None:
        header = _header(self.scope, b"sign-in-with-x")
        if header is None:
            return None
        pw = self.paywall
        try:
            signed = pw.siwx.check(header, resource_url, pw.clock())
        except siwx.SiwxError as exc:
            logger.info("x402 sign-in refused: %s", exc.reason)
            return None
        if await pw.store.get(store_key("siwx-paid", resource_url, signed.address.lower())) is None:
            return None
        ttl = max(1, int(signed.expires_at - pw.clock()) + 1)
        if not await pw.store.add(store_key("siwx-nonce", signed.nonce, signed.address.lower()), {}, ttl):
            logger.info("x402 sign-in refused: nonce reused")
            return None
        return Payment(payer=signed.address, requirements=None, payload=None, signed_in=True)

    def _set_state(self, payment: Payment) -> None:
        self.scope.setdefault("state", {})[STATE_KEY] = payment


#: Reason strings the x402 SDK defines (authgate.x402.errors): the only ones counted by name.
_SETTLE_REASONS = frozenset(v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str))
#: Settlement failures that are the facilitator's or the chain's trouble, not the payer's.
_SETTLE_ERRORS = frozenset({reasons.UNEXPECTED_SETTLE_ERROR, reasons.SETTLEMENT_PENDING})


def _settle_failure(receipt: wire.SettleResponse) -> _Answer:
    return _Answer(402, {"Content-Type": "application/json", "Cache-Control": "no-store",
                         wire.HEADER_PAYMENT_RESPONSE: receipt.to_header(),
                         "Access-Control-Expose-Headers": EXPOSE}, b"{}",
                   outcome="error" if receipt.error_reason in _SETTLE_ERRORS else "denied")


async def _send_answer(send: Send, answer: _Answer, head: bool = False) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    raw.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else answer.body})


@dataclass
class _Buffer:
    start: Message | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    complete: bool = False
    overflow: bool = False


class PaywallMiddleware:
    """Pure ASGI middleware: charges :attr:`Paywall.routes` and settles what :meth:`Paywall.require` verified.
    CORS preflights pass untouched; expose ``PAYMENT-REQUIRED``/``PAYMENT-RESPONSE`` in your CORS setup and
    allow the request headers ``PAYMENT-SIGNATURE`` and ``SIGN-IN-WITH-X``."""

    def __init__(self, app: ASGIApp, paywall: Paywall) -> None:
        self.app = app
        self.paywall = paywall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        if method == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(self.paywall, scope)
        scope.setdefault("state", {})[_EXCHANGE_KEY] = exchange
        head = method == "HEAD"
        route = next((r for r in self.paywall.routes if r.matches(method, scope.get("path", "/"))), None)
        if route is not None:
            try:
                await exchange.charge(route)
            except _Answer as answer:
                await _send_answer(send, answer, head)
                return

        buffer = _Buffer()
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exchange.answer is not None:
                return  # the framework's rendering of the dependency's refusal: replaced below
            pending = exchange.pending
            if pending is None:
                await send(message)
                return
            if not pending.settle_now:  # receipt known: add the header, stream as usual
                if message["type"] == "http.response.start":
                    started = True
                    message = _with_receipt(message, pending.receipt)
                await send(message)
                return
            if message["type"] == "http.response.start":
                buffer.start = message
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                buffer.size += len(body)
                if buffer.size > self.paywall.max_buffer:
                    buffer.overflow = True
                else:
                    buffer.chunks.append(body)
                if not message.get("more_body", False):
                    buffer.complete = True

        try:
            await self.app(scope, receive, guarded_send)
        except _Answer as answer:  # raised by the dependency before anything was sent
            if exchange.pending is not None:
                await self.paywall._release(exchange.pending)
            await _send_answer(send, answer, head)
            return
        except BaseException:
            if exchange.pending is not None:
                await self.paywall._release(exchange.pending)
            if exchange.answer is None:
                raise
        if exchange.answer is not None:
            await _send_answer(send, exchange.answer, head)
            return
        pending = exchange.pending
        if pending is None or not pending.settle_now or started:
            return
        await self._finish(pending, buffer, send, head)

    async def _finish(self, pending: _Pending, buffer: _Buffer, send: Send, head: bool) -> None:
        paywall = self.paywall
        status = int(buffer.start["status"]) if buffer.start is not None else 500
        if buffer.start is None or not buffer.complete or status >= 400:
            # The handler failed (or answered nothing): nothing is settled, its answer goes out as it was.
            paywall.count_settlement(pending.requirements.network, "skipped")
            await paywall._release(pending)
            if buffer.start is not None:
                await send(buffer.start)
                await send({"type": "http.response.body", "body": b"".join(buffer.chunks)})
            else:
                await _send_answer(send, _json_answer(500, {"error": "no_response"}), head)
            return
        if buffer.overflow:
            paywall.count_settlement(pending.requirements.network, "skipped")
            await paywall._release(pending)
            logger.error("x402: response larger than max_buffer (%d bytes); not settled", paywall.max_buffer)
            await _send_answer(send, _json_answer(500, {"error": "response_too_large"}), head)
            return
        receipt = await paywall._settle(pending)
        if not receipt.success:
            await paywall._settle_failed(pending, receipt)
            await paywall._release(pending)
            await _send_answer(send, _settle_failure(receipt), head)
            return
        pending.receipt = receipt
        await paywall._settled(pending, receipt)
        await paywall._collected(pending)
        start = _with_receipt(buffer.start, receipt)
        await send(start)
        await send({"type": "http.response.body", "body": b"".join(buffer.chunks)})


def _with_receipt(start: Message, receipt: wire.SettleResponse | None) -> Message:
    headers = [(k, v) for k, v in start.get("headers", ())
               if k.lower() not in (b"payment-response", b"cache-control")]
    if receipt is not None:
        headers.append((b"payment-response", receipt.to_header().encode("latin-1")))
    headers.append((b"cache-control", b"private"))
    exposed = [i for i, (k, _) in enumerate(headers) if k.lower() == b"access-control-expose-headers"]
    if not exposed:
        headers.append((b"access-control-expose-headers", EXPOSE.encode()))
    return {**start, "headers": headers}
