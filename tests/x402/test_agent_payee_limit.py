"""The paying agent's limit per payee per UTC day (``Budget(max_per_payee_day=...)``): within → paid; over →
refused before signing (or the person is asked); other payees unaffected; another offer's payee preferred; the
day rolls over; the ledger file keeps it (and reads files written before it existed)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from authgate.agent.x402 import ApprovalQuestion, Budget, BudgetExceeded, FileLedger, Ledger, X402PaymentAuth
from authgate.x402 import wire

from .test_agent_pay import offer, paying, server, wallet
from .test_paywall import NETWORK, PAYEE

OTHER = "0x" + "77" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _payee(request_headers: dict[str, str]) -> str:
    return wire.PaymentPayload.from_header(request_headers["payment-signature"]).accepted.pay_to


async def test_over_the_payee_limit_is_refused_and_other_payees_still_paid() -> None:
    clock = Clock()
    ledger = Ledger(clock)
    budget = Budget(max_per_request="$0.10", max_per_day="$1", max_per_payee_day="$0.02")
    transport, seen = server(offer("10000"))  # $0.01 to PAYEE
    async with paying(transport, X402PaymentAuth(wallet(), budget, networks={NETWORK}, ledger=ledger,
                                                 clock=clock)) as http:
        assert (await http.get("https://api.example/a")).status_code == 200
        assert (await http.get("https://api.example/a")).status_code == 200
        with pytest.raises(BudgetExceeded) as refused:
            await http.get("https://api.example/a")
    assert refused.value.reason == "max_per_payee_day" and "limit per payee of $0.02" in str(refused.value)
    assert PAYEE in str(refused.value)
    assert len(seen) == 5  # the refused request was never signed: only its unpaid attempt went out
    assert ledger.spent_today(PAYEE) == ledger.spent_today(PAYEE.lower()) == Decimal("0.02")

    other, _ = server(offer("10000", pay_to=OTHER))
    async with paying(other, X402PaymentAuth(wallet(), budget, networks={NETWORK}, ledger=ledger,
                                             clock=clock)) as http:
        assert (await http.get("https://api.example/b")).status_code == 200
    assert ledger.spent_today(OTHER) == Decimal("0.01") and ledger.spent_today() == Decimal("0.03")

    clock.now += 86400  # the next UTC day
    async with paying(transport, X402PaymentAuth(wallet(), budget, networks={NETWORK}, ledger=ledger,
                                                 clock=clock)) as http:
        assert (await http.get("https://api.example/a")).status_code == 200
    assert ledger.spent_today(PAYEE) == Decimal("0.01") and ledger.spent_today(OTHER) == 0


async def test_an_offer_to_a_payee_within_its_limit_is_preferred() -> None:
    ledger = Ledger()
    ledger.add(Decimal("0.02"), PAYEE.upper().replace("0X", "0x"))  # compared case-insensitively
    budget = Budget(max_per_payee_day="$0.02")
    transport, seen = server(offer("10000"), offer("10000", pay_to=OTHER))
    async with paying(transport, X402PaymentAuth(wallet(), budget, networks={NETWORK}, ledger=ledger)) as http:
        assert (await http.get("https://api.example/a")).status_code == 200
    assert _payee(dict(seen[1].headers)) == OTHER


async def test_the_person_is_asked_about_a_payment_over_the_payee_limit() -> None:
    asked: list[ApprovalQuestion] = []

    async def approve(question: ApprovalQuestion) -> bool:
        asked.append(question)
        return True

    ledger = Ledger()
    budget = Budget(max_per_payee_day="$0.015", approver=approve)
    transport, _ = server(offer("10000"))
    async with paying(transport, X402PaymentAuth(wallet(), budget, networks={NETWORK}, ledger=ledger)) as http:
        assert (await http.get("https://api.example/a")).status_code == 200
        assert not asked
        assert (await http.get("https://api.example/a")).status_code == 200
    (question,) = asked
    assert question.limit == "max_per_payee_day" and question.pay_to == PAYEE
    assert ledger.spent_today(PAYEE) == Decimal("0.02")  # an approved payment is counted, not limited


def test_the_ledger_reserves_both_limits_at_once() -> None:
    ledger = Ledger()
    assert ledger.reserve_payment(Decimal("0.5"), day_limit=Decimal(1), payee=PAYEE,
                                  payee_limit=Decimal("0.6")) is None
    assert ledger.reserve_payment(Decimal("0.2"), day_limit=Decimal(1), payee=PAYEE,
                                  payee_limit=Decimal("0.6")) == "max_per_payee_day"
    assert ledger.reserve_payment(Decimal("0.6"), day_limit=Decimal(1), payee=OTHER,
                                  payee_limit=Decimal("0.6")) == "max_per_day"
    assert ledger.spent_today() == Decimal("0.5") and ledger.spent_today(OTHER) == 0  # refusals count nothing
    assert ledger.reserve(Decimal("0.5"), Decimal(1)) and not ledger.reserve(Decimal("0.01"), Decimal(1))


def test_the_file_ledger_keeps_payees_and_reads_older_files(tmp_path: Path) -> None:
    path = tmp_path / "spend.json"
    clock = Clock()
    day = "2027-01-15"  # 1_800_000_000 in UTC
    path.write_text(json.dumps({"days": {day: "0.3"}, "paid": {}}))  # written before per-payee limits
    ledger = FileLedger(path, clock)
    assert ledger.spent_today() == Decimal("0.3") and ledger.spent_today(PAYEE) == 0
    assert ledger.reserve_payment(Decimal("0.1"), day_limit=Decimal(1), payee=PAYEE,
                                  payee_limit=Decimal("0.1")) is None
    again = FileLedger(path, clock)
    assert again.spent_today(PAYEE) == Decimal("0.1") and again.spent_today() == Decimal("0.4")
    assert json.loads(path.read_text())["payees"] == {day: {PAYEE.lower(): "0.1"}}


def test_no_payee_limit_by_default_and_amounts_in_usd() -> None:
    assert Budget().max_per_payee_day is None
    assert Budget(max_per_payee_day=0.5).max_per_payee_day == Decimal("0.5")
    with pytest.raises(ValueError):
        Budget(max_per_payee_day="1 ETH")
