"""A paying agent: ``X402PaymentAuth``, an ``httpx.Auth`` that answers ``402 Payment Required`` by itself,
within a budget (x402 v2, ``exact`` scheme on EVM with EIP-3009; spec note §2 steps 4-6, §7.2)::

    wallet = Wallet.from_env("AGENT_WALLET_KEY")            # or Wallet.from_file / Wallet.from_keystore
    budget = Budget(max_per_request="$0.05", max_per_day="$2", max_per_payee_day="$0.50",
                    allowed_payees={"0xPayee..."})
    auth = X402PaymentAuth(wallet, budget, networks={"eip155:8453"}, ledger=FileLedger("~/.agent/spend.json"))
    async with httpx.AsyncClient(auth=auth) as http:
        r = await http.get("https://api.example/weather")  # 402 → pick an offer → sign → retry once
        receipt = payment_receipt(r)                        # the settlement (tx hash), or None

Per request, on ``402``: read ``PAYMENT-REQUIRED`` (v2), else a v1 JSON body (answered with ``X-PAYMENT``);
keep the ``exact`` offers on networks the wallet uses and assets the budget allows (authorization flow preferred,
``upfront`` accepted, unknown flows and Permit2-only tokens skipped); check the budget (per request, per UTC day,
per payee per UTC day, payee and asset allow-lists), record the spend, sign an EIP-3009 authorization, and retry
**once**. A second 402 is returned as it is: one signing per logical request, never a payment loop. Exception: a
402 whose ``error`` is ``facilitator_unavailable`` means the signed payment was never used; the same signed request
is sent once more (no new signature, no new spend), and a second such answer raises :class:`PaymentUnavailable`.

Extensions: when the server declares ``payment-identifier`` the payment carries an id (set
``request.extensions["x402_payment_id"]`` to reuse one across your own retries: the server answers a retry from
the first settlement instead of charging again). When it declares ``sign-in-with-x`` and the ledger shows this
wallet paid for that resource before, the agent first signs in (no money moves) and pays only if refused.

Budget refusals raise :class:`BudgetExceeded` (``reason``: ``max_per_request``, ``max_per_day``,
``max_per_payee_day``, ``payee_not_allowed``, ``asset_not_allowed``, ``approval_*``); no usable offer raises
:class:`NoPayableOffer`; a facilitator that stays unreachable raises :class:`PaymentUnavailable` (all
:class:`PaymentError`). Spending is counted
when an authorization is signed, not when it is settled, and never refunded (a server may still settle a
signed authorization until ``validBefore``).

**Approval over the limit.** ``Budget(approver=...)``: an async callback asked, with an
:class:`ApprovalQuestion`, whether to pay an offer that is over ``max_per_request`` or would pass
``max_per_day`` or ``max_per_payee_day`` (allow-lists are never overridden). ``True`` → paid and counted (an
approved payment is not limited); ``False`` → :class:`BudgetExceeded` (``reason="approval_denied"``); an exception
→ ``BudgetExceeded`` (``reason="approval_failed"``): never a payment. Asking is async: with ``httpx.Client`` an
over-limit offer is refused as before. :class:`authgate.agent.approval.CibaApprover` asks the agent's person through
authgate.

**Approval at the server.** A server's own budget for this agent (authgate.trust, docs/trust.md) may answer a
payment with ``403 budget_approval_pending`` and an ``approval_id``: it asked the agent's person. The agent then
waits, repeating the same payment with ``Authgate-Approval: <id>`` after ``approval_poll`` seconds (or the
server's ``Retry-After``), then at intervals doubling up to 30 s (at most ``MAX_APPROVAL_POLLS`` = 12 repeats:
httpx counts them against ``max_redirects``; a longer timeout stretches them), for at most ``approval_timeout``
seconds (default 300; None returns the 403 as it is):
approved → paid, the answer returned as usual; denied or expired (``budget_approval_denied``) →
:class:`ApprovalDenied`; still pending → :class:`ApprovalTimeout` (both ``BudgetExceeded``, with
``approval_id``). Waiting is asynchronous with ``httpx.AsyncClient`` (``sleep``) and blocks with
``httpx.Client``. The same authorization is repeated while it is valid; one about to expire is replaced only after
it has expired, so a server never holds two usable authorizations for one payment, which is counted once.

**Mandates and attestations** (authgate trust profiles, docs/trust.md). ``mandate``: a mandate JWT a person
issued for this agent, sent in ``Authgate-Mandate`` with each payment to a payee it names (to no one else: it
carries the person's terms). ``attestations``: attestation JWTs sent in ``Authgate-Attestation`` with a payment
only when the 402 says the route requires attestations (``Authgate-Attestation-Required``).

The receipt is on ``response.extensions["x402_receipt"]`` (a :class:`~authgate.x402.wire.SettleResponse`) and
what was signed on ``response.extensions["x402_payment"]`` (a :class:`PaymentRecord`, no key material).

Imports only httpx, eth-account, coincurve and authgate's pure x402 modules (no server dependencies).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account

from authgate.x402 import eip3009, networks, wire
from authgate.x402.errors import X402WireError
from authgate.x402.extensions import payment_identifier as pid
from authgate.x402.extensions import siwx
from authgate.x402.price import parse_money

RECEIPT_KEY = "x402_receipt"
PAYMENT_KEY = "x402_payment"
PAYMENT_ID_KEY = "x402_payment_id"
#: ``error`` of a paywall's 402 when its facilitator is unreachable (authgate's paywall and the official SDK's).
FACILITATOR_UNAVAILABLE = "facilitator_unavailable"
#: The authgate trust profiles' headers (the same names as authgate.trust.wire, kept here so the SDK needs none
#: of the server's modules).
MANDATE_HEADER = "Authgate-Mandate"
ATTESTATION_HEADER = "Authgate-Attestation"
ATTESTATION_REQUIRED_HEADER = "Authgate-Attestation-Required"
#: A server-side budget's approval: the request header the payment is repeated with, and the refusal codes.
APPROVAL_HEADER = "Authgate-Approval"
ERR_BUDGET_PENDING = "budget_approval_pending"
ERR_BUDGET_DENIED = "budget_approval_denied"
#: Seconds of validity an authorization must still have for a repeat that may be paid; below that, and only once
#: it has expired (plus ``EXPIRY_SKEW`` for clocks), a new one is signed for the same payment.
RESIGN_MARGIN = 12
EXPIRY_SKEW = 5
#: The most repeats while waiting for a server's approval. httpx counts every request of an auth flow against the
#: client's ``max_redirects`` (default 20), so the waits grow (doubling from ``approval_poll``, then spread over
#: what is left of ``approval_timeout``) instead of the repeats.
MAX_APPROVAL_POLLS = 12
#: Settlement failures whose outcome is unknown (the facilitator died or timed out mid-settlement): the transfer
#: may still land, and the server lets the very same signed payment collect it (authgate.x402.paywall).
SETTLE_UNKNOWN = frozenset({"unexpected_settle_error", "settlement_pending"})
#: Re-sends of one payment whose settlement outcome was unknown, and the first pause before them (doubling).
SETTLE_RETRIES = 3
SETTLE_RETRY_PAUSE = 2.0
#: The longest wait between two repeats, unless ``approval_timeout`` is too long to be covered otherwise.
APPROVAL_POLL_CAP = 30.0


class PaymentError(Exception):
    """The agent would not or could not pay; the message names the offer's terms, never a key."""


class BudgetExceeded(PaymentError):
    """The budget refused every offer: too expensive per request or today, or a payee/asset not allowed."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ApprovalDenied(BudgetExceeded):
    """The server found the payment over the agent's budget there and asked the agent's person, who denied it
    (or let the request expire). ``approval_id``: the server's approval request."""

    def __init__(self, message: str, *, approval_id: str) -> None:
        super().__init__(message, reason="approval_denied")
        self.approval_id = approval_id


class ApprovalTimeout(BudgetExceeded):
    """The server's approval request was still pending when ``approval_timeout`` ran out; nothing was paid. The
    person may still decide: the same request made again later is a new payment (and a new question)."""

    def __init__(self, message: str, *, approval_id: str) -> None:
        super().__init__(message, reason="approval_timeout")
        self.approval_id = approval_id


class NoPayableOffer(PaymentError):
    """No offer uses a scheme, network, asset or payment flow this agent can pay with."""


class PaymentUnavailable(PaymentError):
    """The server answered ``facilitator_unavailable`` twice for the same signed payment: nothing was charged
    (the authorization was never verified). ``retry_after``: the server's ``Retry-After`` in seconds, if any."""

    def __init__(self, message: str, *, retry_after: int | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- keys ----------------------------------------------------------------------------------------------------


class Wallet:
    """An EVM account that signs payment authorizations. The key stays inside; ``repr`` shows the address."""

    __slots__ = ("__account", "address")

    def __init__(self, private_key: str | bytes) -> None:
        try:
            account = Account.from_key(private_key)
        except Exception:
            raise ValueError("not a valid secp256k1 private key") from None  # never echo the input
        self.__account = account
        self.address: str = str(account.address)

    def __repr__(self) -> str:
        return f"Wallet(address={self.address!r})"

    __str__ = __repr__

    @classmethod
    def from_env(cls, name: str = "AUTHGATE_X402_KEY") -> Wallet:
        value = os.environ.get(name, "").strip()
        if not value:
            raise ValueError(f"environment variable {name} is empty")
        return cls(value)

    @classmethod
    def from_file(cls, path: str | Path) -> Wallet:
        """A file holding the hex key (one line); it should be readable by its owner only."""
        return cls(Path(path).expanduser().read_text().strip())

    @classmethod
    def from_keystore(cls, path: str | Path, password: str) -> Wallet:
        """An Ethereum V3 keystore (JSON, scrypt/pbkdf2), as written by geth, foundry's ``cast wallet``."""
        keystore = json.loads(Path(path).expanduser().read_text())
        return cls(bytes(Account.decrypt(keystore, password)))

    def sign_authorization(self, authorization: eip3009.Authorization, *, name: str, version: str, chain_id: int,
                           verifying_contract: str) -> eip3009.ExactEvmPayload:
        digest = authorization.digest(name, version, chain_id, verifying_contract)
        signed = self.__account.unsafe_sign_hash(digest)
        signature = int(signed.r).to_bytes(32, "big") + int(signed.s).to_bytes(32, "big") + bytes([int(signed.v)])
        return eip3009.ExactEvmPayload(authorization=authorization, signature=signature)

    def sign_in(self, declaration: dict[str, Any], response_url: str) -> str | None:
        return siwx.sign_header(declaration, self.__account, response_url)


# -- budget and ledger ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovalQuestion:
    """What the agent asks its person about one payment over its own budget (no key material)."""

    price_usd: Decimal
    pay_to: str
    network: str
    asset: str
    resource: str
    #: ``max_per_request``, ``max_per_day`` or ``max_per_payee_day``: the limit the payment is over.
    limit: str
    #: The refusal it would otherwise be, in words ("price $0.5 is above the per-request limit of $0.1").
    reason: str

    def summary(self, limit: int = 256) -> str:
        """One printable line for a person: what, to whom, for what, and why they are asked."""
        text = f"Pay ${self.price_usd} to {self.pay_to} for {self.resource} ({self.reason})"
        text = "".join(c if c.isprintable() else "?" for c in text)
        return text if len(text) <= limit else text[:limit - 1] + "\u2026"


Approver = Callable[[ApprovalQuestion], Awaitable[bool]]


def _money(value: str | int | float | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        return value
    amount, ticker = parse_money(value)
    if ticker not in (None, "USDC"):
        raise ValueError("budget amounts are in USD (a default stablecoin)")
    return Decimal(amount)


@dataclass(frozen=True)
class Budget:
    """Spending limits in USD of the networks' default stablecoins (``"$0.05"``, ``0.05``).

    ``allowed_payees``/``allowed_assets``: None allows any payee / every default stablecoin; asset entries are
    ``"network:address"`` strings (``eip155:8453:0x8335...``), compared case-insensitively. ``asset_decimals``
    lets a non-default asset be priced (``{"eip155:1:0x...": 6}``), each unit counted as one dollar.
    ``max_per_payee_day``: the most paid to any one payee (``payTo``, case-insensitive) per UTC day; None: no such
    limit (only ``max_per_day``). ``approver``: asked before refusing a payment over ``max_per_request``,
    ``max_per_day`` or ``max_per_payee_day`` (module docstring)."""

    max_per_request: str | int | float | Decimal = "$0.10"
    max_per_day: str | int | float | Decimal = "$1"
    max_per_payee_day: str | int | float | Decimal | None = None
    allowed_payees: frozenset[str] | set[str] | None = None
    allowed_assets: frozenset[str] | set[str] | None = None
    asset_decimals: dict[str, int] = field(default_factory=dict)
    approver: Approver | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_per_request", _money(self.max_per_request))
        object.__setattr__(self, "max_per_day", _money(self.max_per_day))
        if self.max_per_payee_day is not None:
            object.__setattr__(self, "max_per_payee_day", _money(self.max_per_payee_day))
        if self.allowed_payees is not None:
            object.__setattr__(self, "allowed_payees", frozenset(p.lower() for p in self.allowed_payees))
        if self.allowed_assets is not None:
            object.__setattr__(self, "allowed_assets", frozenset(a.lower() for a in self.allowed_assets))
        object.__setattr__(self, "asset_decimals", {k.lower(): v for k, v in self.asset_decimals.items()})

    def price_of(self, offer: wire.PaymentRequirements, network: str) -> Decimal | None:
        """The offer's price in USD, or None when the asset is neither allowed nor known."""
        key = f"{network}:{offer.asset}".lower()
        if self.allowed_assets is not None and key not in self.allowed_assets:
            return None
        decimals = self.asset_decimals.get(key)
        if decimals is None:
            known = networks.find_asset(network, offer.asset)
            if known is None:
                return None
            decimals = known.decimals
        return Decimal(int(offer.amount)) / (Decimal(10) ** decimals)


class Ledger:
    """Spending per UTC day (in all, and per payee), and the resources this wallet paid for (for
    sign-in-with-x). In memory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {"days": {}, "payees": {}, "paid": {}}

    def _load(self) -> dict[str, Any]:
        return self._data

    def _save(self, data: dict[str, Any]) -> None:
        self._data = data

    def _day(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")

    def spent_today(self, payee: str | None = None) -> Decimal:
        """Today's spending in all, or paid to ``payee``."""
        with self._lock:
            data = self._load()
            if payee is None:
                return Decimal(data["days"].get(self._day(), "0"))
            return Decimal(data.get("payees", {}).get(self._day(), {}).get(payee.lower(), "0"))

    @staticmethod
    def _count(data: dict[str, Any], day: str, amount: Decimal, payee: str | None) -> None:
        # Older days are not needed any more: only today's totals are kept.
        data["days"] = {day: str(Decimal(data["days"].get(day, "0")) + amount)}
        if payee is not None:
            payees = dict(data.get("payees", {}).get(day, {}))
            payees[payee] = str(Decimal(payees.get(payee, "0")) + amount)
            data["payees"] = {day: payees}

    def add(self, amount: Decimal, payee: str | None = None) -> None:
        """Count ``amount`` today (and to ``payee``) whatever the limits (a payment the agent's person
        approved)."""
        with self._lock:
            data = self._load()
            self._count(data, self._day(), amount, payee.lower() if payee else None)
            self._save(data)

    def reserve_payment(self, amount: Decimal, *, day_limit: Decimal, payee: str | None = None,
                        payee_limit: Decimal | None = None) -> str | None:
        """Add ``amount`` to today's spending (in all and to ``payee``) unless that would pass ``day_limit`` or
        ``payee_limit``; atomic within the process. The limit that would be passed (``max_per_day``,
        ``max_per_payee_day``; nothing counted), or None (counted)."""
        with self._lock:
            data = self._load()
            day = self._day()
            payee = payee.lower() if payee else None
            if Decimal(data["days"].get(day, "0")) + amount > day_limit:
                return "max_per_day"
            if payee is not None and payee_limit is not None and \
                    Decimal(data.get("payees", {}).get(day, {}).get(payee, "0")) + amount > payee_limit:
                return "max_per_payee_day"
            self._count(data, day, amount, payee)
            self._save(data)
            return None

    def reserve(self, amount: Decimal, limit: Decimal) -> bool:
        """Add ``amount`` to today's spending unless that would pass ``limit``; atomic within the process."""
        return self.reserve_payment(amount, day_limit=limit) is None

    def record_paid(self, resource_url: str, until: float) -> None:
        with self._lock:
            data = self._load()
            now = self.clock()
            data["paid"] = {k: v for k, v in data["paid"].items() if v > now}
            data["paid"][resource_url] = until
            self._save(data)

    def has_paid(self, resource_url: str) -> bool:
        with self._lock:
            return float(self._load()["paid"].get(resource_url, 0)) > self.clock()


class FileLedger(Ledger):
    """:class:`Ledger` kept in a small JSON file (written atomically, owner-only), so limits survive
    restarts. One process at a time should use a file."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.path = Path(path).expanduser()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"days": {}, "payees": {}, "paid": {}}
        except ValueError as exc:
            raise PaymentError(f"spending ledger {self.path} is unreadable; refusing to pay") from exc
        if not isinstance(data, dict) or not isinstance(data.get("days"), dict) or \
                not isinstance(data.setdefault("payees", {}), dict):
            raise PaymentError(f"spending ledger {self.path} is malformed; refusing to pay")
        data.setdefault("paid", {})
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.path)


# -- the auth flow -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRecord:
    """What the agent signed for one request (safe to log: no key material)."""

    x402_version: int
    offer: wire.PaymentRequirements
    authorization: dict[str, str]
    price_usd: Decimal
    payment_id: str | None = None


def payment_receipt(response: httpx.Response) -> wire.SettleResponse | None:
    """The settlement receipt the server sent with ``response`` (``PAYMENT-RESPONSE``), if any."""
    receipt = response.extensions.get(RECEIPT_KEY)
    return receipt if isinstance(receipt, wire.SettleResponse) else None


def _read_receipt(response: httpx.Response) -> wire.SettleResponse | None:
    for name in (wire.HEADER_PAYMENT_RESPONSE, wire.HEADER_V1_PAYMENT_RESPONSE):
        value = response.headers.get(name)
        if value:
            try:
                return wire.SettleResponse.from_header(value)
            except X402WireError:
                return None
    return None


def _read_required(response: httpx.Response) -> wire.PaymentRequired | None:
    header = response.headers.get(wire.HEADER_PAYMENT_REQUIRED)
    try:
        if header:
            return wire.PaymentRequired.from_header(header)
        if len(response.content) <= wire.MAX_JSON_BYTES:
            body = json.loads(response.content)
            if isinstance(body, dict) and body.get("x402Version") == 1:
                return wire.PaymentRequired.from_dict(body)
    except (X402WireError, ValueError):
        return None
    return None


def _facilitator_unavailable(response: httpx.Response) -> bool:
    """A 402 whose fresh ``PAYMENT-REQUIRED`` says the server could not reach its facilitator."""
    if response.status_code != 402:
        return False
    required = _read_required(response)
    return required is not None and required.error == FACILITATOR_UNAVAILABLE


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() and len(value) <= 6 else None


def _mandate_payees(token: str) -> frozenset[str]:
    """The payees a mandate JWT names (read, not verified: the server verifies it), lower-case."""
    parts = token.split(".") if isinstance(token, str) and len(token) <= 8192 else []
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))) if len(parts) == 3 \
            else None
    except (ValueError, binascii.Error):
        claims = None
    terms = claims.get("mandate") if isinstance(claims, dict) else None
    payees = terms.get("payees") if isinstance(terms, dict) else None
    if not isinstance(payees, list) or not payees or not all(isinstance(p, str) for p in payees):
        raise ValueError("mandate: not an authgate mandate JWT (no mandate.payees claim)")
    return frozenset(p.lower() for p in payees)


@dataclass(frozen=True)
class _Ask:
    """A step of the payment flow: ask ``approver`` before paying (the driver sends back its answer)."""

    approver: Approver
    question: ApprovalQuestion


@dataclass(frozen=True)
class _Wait:
    """A step of the payment flow: let ``seconds`` pass (the driver sleeps, then sends back None)."""

    seconds: float


_Step = httpx.Request | _Ask | _Wait
#: What a driver sends back: the response to a request; for an _Ask the answer, the approver's exception, or
#: None when it cannot ask (a sync client); None after a _Wait.
_Reply = httpx.Response | bool | BaseException | None
_Flow = Generator[_Step, _Reply, None]


def _refusal(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON body of a ``403`` trust refusal (``{"error": CODE, ...}``), or None."""
    if response.status_code != 403 or len(response.content) > 8192:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) and isinstance(body.get("error"), str) else None


def _approval_id(body: dict[str, Any] | None) -> str | None:
    """The approval id of a ``budget_approval_pending`` refusal, if it is one a header may carry."""
    if body is None or body.get("error") != ERR_BUDGET_PENDING:
        return None
    value = body.get("approval_id")
    if isinstance(value, str) and 0 < len(value) <= 64 and all(c.isalnum() or c in "-_" for c in value):
        return value
    return None


def _poll_pause(interval: float, left: int, rest: float) -> tuple[float, float]:
    """The next wait, and the interval after it, of ``left`` repeats that must cover ``rest`` seconds: waits
    doubling from ``interval`` up to ``APPROVAL_POLL_CAP``, or up to the smallest higher cap that covers ``rest``;
    when even uncapped doubling could not, waits growing by the ratio that does."""
    terms = [interval * 2**i for i in range(left)]
    if sum(terms) < rest:
        low, high = 2.0, 1e6
        for _ in range(100):  # interval * (r**left - 1) / (r - 1) == rest, by bisection
            ratio = (low + high) / 2
            low, high = (ratio, high) if interval * (ratio**left - 1) / (ratio - 1) < rest else (low, ratio)
        return interval, interval * high
    if sum(min(t, APPROVAL_POLL_CAP) for t in terms) >= rest:
        return min(interval, APPROVAL_POLL_CAP), interval * 2
    below = 0.0
    for k in range(left):  # the first k waits stay below the cap, the other left-k are the cap
        cap = (rest - below) / (left - k)
        if cap <= terms[k]:
            return min(interval, cap), interval * 2
        below += terms[k]
    return min(interval, rest), interval * 2  # not reached: the doubling waits cover rest


def _words(value: Any, limit: int = 200) -> str:
    text = "".join(c if c.isprintable() else "?" for c in str(value or ""))
    return text[:limit]


class X402PaymentAuth(httpx.Auth):
    """Pays for ``402`` answers within ``budget`` (see the module docstring). ``networks``: CAIP-2 ids the
    wallet holds funds on (v1 legacy names are mapped). Works with ``httpx.Client`` and ``httpx.AsyncClient``
    (approvals need the latter). ``mandate``/``attestations``: authgate trust profile JWTs (module docstring).

    ``approval_timeout``: how long to wait for the decision when the *server* asks the agent's person about a
    payment over its budget there (``403 budget_approval_pending``), polling after ``approval_poll`` seconds (or
    the server's ``Retry-After``) at first, then at growing intervals; None: return that answer as it is.
    ``sleep``: how the async flow waits (default ``asyncio.sleep``; the sync flow uses ``time.sleep``)."""

    requires_response_body = True

    def __init__(self, wallet: Wallet, budget: Budget, *, networks: Iterable[str],
                 ledger: Ledger | None = None, clock: Callable[[], float] = time.time,
                 sign_in_seconds: int = 24 * 3600, use_sign_in: bool = True, mandate: str | None = None,
                 attestations: Sequence[str] = (), approval_timeout: float | None = 300.0,
                 approval_poll: float = 2.0, sleep: Callable[[float], Awaitable[None]] | None = None) -> None:
        self.wallet = wallet
        self.budget = budget
        self.networks = frozenset(networks_normalized(networks))
        self.ledger = ledger if ledger is not None else Ledger(clock)
        self.clock = clock
        self.sign_in_seconds = sign_in_seconds
        self.use_sign_in = use_sign_in
        self.mandate = mandate
        self._mandate_payees = _mandate_payees(mandate) if mandate is not None else frozenset()
        if isinstance(attestations, str) or not all(isinstance(a, str) and a and "," not in a
                                                    for a in attestations):
            raise ValueError("attestations: a list of attestation JWTs")
        self.attestations = tuple(attestations)
        if approval_timeout is not None and not 0 <= approval_timeout <= 24 * 3600:
            raise ValueError("approval_timeout: seconds between 0 and 86400, or None")
        if not 0 < approval_poll <= 300:
            raise ValueError("approval_poll: seconds between 0 and 300")
        self.approval_timeout = approval_timeout
        self.approval_poll = approval_poll
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"X402PaymentAuth(wallet={self.wallet!r}, networks={sorted(self.networks)!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The flow for ``httpx.Client``: nobody can be asked, so an over-limit payment is refused; waiting for
        the server's approval blocks the thread."""
        flow = self._flow(request)
        step = next(flow)
        while True:
            reply: _Reply
            if isinstance(step, _Ask):
                reply = None  # could not ask
            elif isinstance(step, _Wait):
                time.sleep(step.seconds)
                reply = None
            else:
                reply = yield step
            try:
                step = flow.send(reply)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        step = next(flow)
        while True:
            reply: _Reply
            if isinstance(step, _Ask):
                try:
                    reply = bool(await step.approver(step.question))
                except Exception as exc:
                    reply = exc
            elif isinstance(step, _Wait):
                await (self.sleep or asyncio.sleep)(step.seconds)
                reply = None
            else:
                response = yield step
                await response.aread()
                reply = response
            try:
                step = flow.send(reply)
            except StopIteration:
                return

    def _flow(self, request: httpx.Request) -> _Flow:
        response = yield request
        assert isinstance(response, httpx.Response)
        if response.status_code != 402:
            return
        required = _read_required(response)
        if required is None:
            return
        resource_url = required.resource.url if required.resource and required.resource.url else str(request.url)
        wants_attestations = ATTESTATION_REQUIRED_HEADER in response.headers

        declaration = (required.extensions or {}).get(siwx.SIGN_IN_WITH_X)
        if (self.use_sign_in and isinstance(declaration, dict) and required.x402_version == 2
                and self.ledger.has_paid(resource_url)):
            try:
                header = self.wallet.sign_in(declaration, str(response.url))
            except siwx.SiwxError:
                header = None
            if header is not None:
                request.headers[siwx.HEADER] = header
                response = yield request
                assert isinstance(response, httpx.Response)
                del request.headers[siwx.HEADER]
                if response.status_code != 402:
                    return
                required = _read_required(response) or required

        offer, network, price, over = self._choose(required)
        payment_id: str | None = None
        extensions: dict[str, Any] | None = None
        if required.x402_version == 2 and required.extensions:
            extensions = dict(required.extensions)
            if pid.PAYMENT_IDENTIFIER in extensions:
                wanted = request.extensions.get(PAYMENT_ID_KEY)
                payment_id = wanted if isinstance(wanted, str) else pid.new_id()
                extensions = pid.append(extensions, payment_id)
            extensions.pop(siwx.SIGN_IN_WITH_X, None)
        if over is None:
            passed = self.ledger.reserve_payment(
                price, day_limit=Decimal(self.budget.max_per_day), payee=offer.pay_to,
                payee_limit=None if self.budget.max_per_payee_day is None else Decimal(self.budget.max_per_payee_day))
            if passed == "max_per_day":
                over = BudgetExceeded(f"paying ${price} would pass today's limit of ${self.budget.max_per_day}",
                                      reason="max_per_day")
            elif passed is not None:
                over = BudgetExceeded(f"paying ${price} to {offer.pay_to} would pass today's limit per payee of "
                                      f"${self.budget.max_per_payee_day}", reason=passed)
        if over is not None:
            approver = self.budget.approver
            if approver is None:
                raise over
            question = ApprovalQuestion(price, offer.pay_to, network, offer.asset, resource_url, over.reason,
                                        str(over))
            answer = yield _Ask(approver, question)
            if answer is None:
                raise BudgetExceeded(f"{over} (asking for approval needs httpx.AsyncClient)", reason=over.reason)
            if isinstance(answer, BaseException):
                raise BudgetExceeded(f"{over}; asking for approval failed ({answer.__class__.__name__})",
                                     reason="approval_failed") from answer
            if answer is not True:
                raise BudgetExceeded(f"{over}, and it was not approved", reason="approval_denied")
            self.ledger.add(price, offer.pay_to)

        def sign() -> tuple[PaymentRecord, int]:
            """Sign an authorization for this payment and put it (and our trust JWTs) on the request."""
            now = int(self.clock())
            authorization = eip3009.Authorization(
                from_address=self.wallet.address, to=offer.pay_to, value=int(offer.amount), valid_after=0,
                valid_before=now + offer.max_timeout_seconds, nonce=eip3009.new_nonce())
            name, version = self._domain(offer, network)
            signed = self.wallet.sign_authorization(authorization, name=name, version=version,
                                                    chain_id=networks.evm_chain_id(network),
                                                    verifying_contract=offer.asset)
            if required.x402_version == 1:
                request.headers[wire.HEADER_V1_PAYMENT] = wire.PaymentPayloadV1(
                    scheme=offer.scheme, network=offer.network, payload=signed.to_dict()).to_header()
            else:
                request.headers[wire.HEADER_PAYMENT_SIGNATURE] = wire.PaymentPayload(
                    payload=signed.to_dict(), accepted=offer, resource=required.resource,
                    extensions=extensions).to_header()
            record = PaymentRecord(required.x402_version, offer, authorization.to_dict(), price, payment_id)
            return record, authorization.valid_before

        record, valid_before = sign()
        if self.mandate is not None and offer.pay_to.lower() in self._mandate_payees:
            request.headers[MANDATE_HEADER] = self.mandate
        if self.attestations and wants_attestations:
            request.headers[ATTESTATION_HEADER] = ", ".join(self.attestations)
        response = yield request
        assert isinstance(response, httpx.Response)
        response = yield from self._unless_unavailable(request, response)
        response = yield from self._unless_settle_unknown(request, response, valid_before)
        approval_id = _approval_id(_refusal(response))
        if approval_id is not None and self.approval_timeout is not None:
            record, response = yield from self._await_approval(request, response, approval_id, sign, record,
                                                               valid_before)
        response.extensions[PAYMENT_KEY] = record
        receipt = _read_receipt(response)
        if receipt is not None:
            response.extensions[RECEIPT_KEY] = receipt
            if receipt.success and response.status_code < 400:
                self.ledger.record_paid(resource_url, self.clock() + self.sign_in_seconds)

    def _unless_unavailable(self, request: httpx.Request, response: httpx.Response
                            ) -> Generator[_Step, _Reply, httpx.Response]:
        """The server could not reach its facilitator: our authorization was never used (nothing verified,
        nothing settled) and stays valid, so the same signed request is sent once more, without signing or
        spending again. A second such answer is an error, not a reason to loop."""
        if not _facilitator_unavailable(response):
            return response
        again = yield request
        assert isinstance(again, httpx.Response)
        if _facilitator_unavailable(again):
            raise PaymentUnavailable("the server's payment facilitator is unavailable; nothing was charged, retry "
                                     "later", retry_after=_retry_after(again))
        return again

    def _unless_settle_unknown(self, request: httpx.Request, response: httpx.Response, valid_before: int
                               ) -> Generator[_Step, _Reply, httpx.Response]:
        """The server's facilitator could not tell whether our transfer was settled (it died or timed out on the
        chain): the transfer may yet land, and signing a new authorization could pay twice. So the very same
        signed request is sent again, a few times with growing pauses, while the authorization is valid: the
        server collects the first settlement's outcome for it (never a second transfer) and answers with its
        receipt. Still unknown after that: the last answer, whose ``PAYMENT-RESPONSE`` says so."""
        pause = SETTLE_RETRY_PAUSE
        for _ in range(SETTLE_RETRIES):
            receipt = _read_receipt(response)
            if response.status_code != 402 or receipt is None or receipt.error_reason not in SETTLE_UNKNOWN:
                return response
            hint = _retry_after(response)
            wait = max(pause, float(min(hint, 60))) if hint is not None else pause
            if self.clock() + wait >= valid_before:
                return response
            yield _Wait(wait)
            pause *= 2
            again = yield request
            assert isinstance(again, httpx.Response)
            response = again
        return response

    def _await_approval(self, request: httpx.Request, response: httpx.Response, approval_id: str,
                        sign: Callable[[], tuple[PaymentRecord, int]], record: PaymentRecord, valid_before: int
                        ) -> Generator[_Step, _Reply, tuple[PaymentRecord, httpx.Response]]:
        """The server asked the agent's person about this payment (over the agent's budget there): repeat the
        same payment with ``Authgate-Approval: <id>`` until it is decided — approved → the server's answer (paid);
        denied or expired → :class:`ApprovalDenied`; still pending after ``approval_timeout`` →
        :class:`ApprovalTimeout`.

        A pending repeat is refused before the facilitator sees the authorization, but the repeat that finds
        the approval decided is paid with it (and uses the approval up), so it must still be valid then. When it
        would not be, the agent waits until it has expired (so the server can no longer settle it) and signs a
        new one for the same payment: at most one authorization of a payment is ever valid, and the ledger
        counts the payment once."""
        assert self.approval_timeout is not None
        deadline = self.clock() + self.approval_timeout
        interval, polls = self.approval_poll, 0
        request.headers[APPROVAL_HEADER] = approval_id

        def timeout() -> ApprovalTimeout:
            return ApprovalTimeout(f"the server asked the agent's person to approve this payment (over the agent's "
                                   f"budget there) and no decision came within {self.approval_timeout:g} s; nothing "
                                   f"was paid (approval {approval_id})", approval_id=approval_id)

        while True:
            body = _refusal(response)
            code = body.get("error") if body is not None else None
            if code == ERR_BUDGET_DENIED:
                assert body is not None
                raise ApprovalDenied(f"the agent's person did not approve this payment over its budget at the "
                                     f"server: {_words(body.get('error_description'))} (approval {approval_id})",
                                     approval_id=approval_id)
            if code != ERR_BUDGET_PENDING:
                return record, response
            now = self.clock()
            if now >= deadline or polls >= MAX_APPROVAL_POLLS:
                raise timeout()
            rest = deadline - now
            pause, interval = _poll_pause(interval, MAX_APPROVAL_POLLS - polls, rest)
            hint = _retry_after(response)
            if hint is not None:
                pause = max(pause, float(min(hint, 60)))
            polls += 1
            yield _Wait(min(pause, rest))
            if valid_before - self.clock() < RESIGN_MARGIN:
                gap = valid_before + EXPIRY_SKEW - self.clock()
                if self.clock() + max(gap, 0) > deadline:
                    raise timeout()
                if gap > 0:
                    yield _Wait(gap)
                record, valid_before = sign()
            again = yield request
            assert isinstance(again, httpx.Response)
            response = yield from self._unless_unavailable(request, again)

    def _choose(self, required: wire.PaymentRequired
                ) -> tuple[wire.PaymentRequirements, str, Decimal, BudgetExceeded | None]:
        """The first payable offer, authorization flow first; budget refusals only if nothing else fits. With
        an approver, the cheapest offer over ``max_per_request`` or its payee's daily limit only, with its
        refusal (to ask about)."""
        payable: list[tuple[int, wire.PaymentRequirements, str, Decimal]] = []
        refusals: list[BudgetExceeded] = []
        over_limit: list[tuple[Decimal, int, wire.PaymentRequirements, str, BudgetExceeded]] = []
        payee_limit = self.budget.max_per_payee_day
        for offer in required.accepts:
            if offer.scheme != "exact":
                continue
            try:
                network = networks.normalize_network(offer.network)
                networks.evm_chain_id(network)
            except ValueError:
                continue
            if network not in self.networks:
                continue
            flow = offer.extra.get("paymentFlow", "authorization")
            if flow not in ("authorization", "upfront") or offer.extra.get("assetTransferMethod") == "permit2":
                continue
            if not (offer.asset.startswith("0x") and len(offer.asset) == 42):
                continue
            price = self.budget.price_of(offer, network)
            if price is None:
                refusals.append(BudgetExceeded(f"asset {offer.asset} on {network} is not allowed by the budget",
                                               reason="asset_not_allowed"))
                continue
            payees = self.budget.allowed_payees
            if payees is not None and offer.pay_to.lower() not in payees:
                refusals.append(BudgetExceeded(f"payee {offer.pay_to} is not allowed by the budget",
                                               reason="payee_not_allowed"))
                continue
            rank = 0 if flow == "authorization" else 1
            refusal: BudgetExceeded | None = None
            if price > Decimal(self.budget.max_per_request):
                refusal = BudgetExceeded(f"price ${price} is above the per-request limit of "
                                         f"${self.budget.max_per_request}", reason="max_per_request")
            elif payee_limit is not None and \
                    self.ledger.spent_today(offer.pay_to) + price > Decimal(payee_limit):
                refusal = BudgetExceeded(f"paying ${price} to {offer.pay_to} would pass today's limit per payee "
                                         f"of ${payee_limit}", reason="max_per_payee_day")
            if refusal is not None:
                refusals.append(refusal)
                over_limit.append((price, rank, offer, network, refusal))
                continue
            payable.append((rank, offer, network, price))
        if payable:
            payable.sort(key=lambda item: item[0])  # stable: the server's order within a flow
            _, offer, network, price = payable[0]
            return offer, network, price, None
        if over_limit and self.budget.approver is not None:
            over_limit.sort(key=lambda item: (item[0], item[1]))
            price, _, offer, network, refusal = over_limit[0]
            return offer, network, price, refusal
        if refusals:
            raise refusals[0]
        raise NoPayableOffer("no offer uses a network, asset and scheme this agent pays with ("
                             + ", ".join(sorted(self.networks)) + ")")

    def _domain(self, offer: wire.PaymentRequirements, network: str) -> tuple[str, str]:
        name, version = offer.extra.get("name"), offer.extra.get("version")
        if isinstance(name, str) and isinstance(version, str):
            return name, version
        known = networks.find_asset(network, offer.asset)
        if known is None:
            raise NoPayableOffer(f"offer for {offer.asset} on {network} names no EIP-712 domain")
        return known.name, known.version


def networks_normalized(values: Iterable[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(networks.normalize_network(value))
        except ValueError as exc:
            raise ValueError(f"unknown network {value[:64]!r}") from exc
    return out

