"""Operations endpoints and instrumentation: /metrics, /ready, request IDs, JSON logs."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest

from authgate.context import ServerContext
from authgate.ops import logs, requestid
from authgate.ops.metrics import Metrics
from tests.helpers import add_client


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text exposition, or None when absent."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if found == labels:
            return float(value)
    return None


async def test_metrics_count_requests_by_route_template_not_raw_path(client: httpx.AsyncClient) -> None:
    await client.get("/register/c_secret_client_id")  # a path carrying an identifier
    await client.get("/no/such/path")
    await client.get("/.well-known/oauth-authorization-server")
    text = (await client.get("/metrics")).text
    assert "c_secret_client_id" not in text
    assert sample(text, "authgate_http_requests_total", route="/register/{client_id}", method="GET",
                  status="401") == 1
    assert sample(text, "authgate_http_requests_total", route="<unmatched>", method="GET", status="404") == 1
    assert sample(text, "authgate_http_requests_total", route="/.well-known/oauth-authorization-server",
                  method="GET", status="200") == 1


async def test_the_mounted_facilitator_is_counted_by_its_own_routes(client: httpx.AsyncClient) -> None:
    """The x402 facilitator is an app mounted under /x402 and built on first use: its requests are labelled with
    its route templates (they were all "<unmatched>")."""
    assert (await client.get("/x402/supported")).status_code == 200
    await client.post("/x402/verify", content=b"{}", headers={"Content-Type": "application/json"})
    text = (await client.get("/metrics")).text
    assert sample(text, "authgate_http_requests_total", route="/x402/supported", method="GET", status="200") == 1
    assert any(sample(text, "authgate_http_requests_total", route="/x402/verify", method="POST", status=str(code))
               for code in (200, 400, 422))
    assert sample(text, "authgate_http_requests_total", route="<unmatched>", method="GET", status="200") is None


async def test_metrics_count_tokens_and_token_errors(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                         grant_types=["client_credentials"], scope="read")
    assert secret is not None
    ok = await client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert ok.status_code == 200
    bad = await client.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong"))
    assert bad.status_code == 401
    text = (await client.get("/metrics")).text
    assert sample(text, "authgate_tokens_issued_total", grant_type="client_credentials") == 1
    assert sample(text, "authgate_token_errors_total", error="invalid_client") == 1


async def test_approval_decision_latency_is_observed(client: httpx.AsyncClient, ctx: ServerContext,
                                                     clock: Any) -> None:
    request = await ctx.approvals.create(kind="test", subject="u1", client_id=None, details={}, notify=False)
    clock.advance(42)
    await ctx.approvals.decide(request.id, True, by="u1", channel="web")
    text = (await client.get("/metrics")).text
    assert sample(text, "authgate_approval_decision_seconds_count", status="approved") == 1
    assert sample(text, "authgate_approval_decision_seconds_sum", status="approved") == 42


async def test_metrics_token_is_required_when_configured(make_client: Any, settings: Any) -> None:
    _, http = await make_client(settings, metrics_token="s3cret-metrics")
    assert (await http.get("/metrics")).status_code == 401
    assert (await http.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
    ok = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert ok.status_code == 200 and "authgate_http_requests_total" in ok.text


async def test_metrics_can_be_switched_off(make_client: Any, settings: Any) -> None:
    _, http = await make_client(settings, metrics_enabled=False)
    assert (await http.get("/metrics")).status_code == 404


async def test_ready_reports_database_and_keys(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


async def test_ready_is_503_when_the_database_is_gone(ctx: ServerContext, client: httpx.AsyncClient,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("database down")

    monkeypatch.setattr(ctx.store, "ping", broken)
    response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "problems": ["database: ConnectionRefusedError"]}
    assert (await client.get("/health")).status_code == 200  # alive, just not ready


async def test_request_id_is_echoed_when_safe_and_replaced_when_not(client: httpx.AsyncClient) -> None:
    kept = await client.get("/health", headers={"X-Request-ID": "lb-1234.abc"})
    assert kept.headers["x-request-id"] == "lb-1234.abc"
    replaced = await client.get("/health", headers={"X-Request-ID": "evil\tvalue with spaces"})
    assert replaced.headers["x-request-id"] != "evil\tvalue with spaces"
    assert len(replaced.headers["x-request-id"]) == 16
    fresh = await client.get("/health")
    assert fresh.headers["x-request-id"] != replaced.headers["x-request-id"]


def test_request_id_choice() -> None:
    assert requestid.choose(b"abc-DEF_1.2:3") == "abc-DEF_1.2:3"
    assert requestid.choose(b"x" * 65) != "x" * 65
    assert requestid.choose(b"\xff\xfe") != "\xff\xfe"
    assert requestid.choose(None) != requestid.choose(None)


async def test_access_log_has_route_and_request_id_but_no_query(client: httpx.AsyncClient,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="authgate.access"):
        await client.get("/authorize?client_id=x&state=SECRET-STATE", headers={"X-Request-ID": "req-77"})
    records = [r for r in caplog.records if r.name == "authgate.access"]
    assert records, "no access line"
    record = records[-1]
    assert record.__dict__["route"] == "/authorize"
    assert "SECRET-STATE" not in record.getMessage()
    formatted = json.loads(logs.JsonFormatter().format(_with_request_id(record, "req-77")))
    assert formatted["request_id"] == "req-77"
    assert formatted["route"] == "/authorize" and formatted["status"] == record.__dict__["status"]
    assert "SECRET-STATE" not in json.dumps(formatted)


def _with_request_id(record: logging.LogRecord, rid: str) -> logging.LogRecord:
    token = requestid.current.set(rid)
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        requestid.current.reset(token)
    return record


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord("authgate", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    record.client_id = "c_1"
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "hello world" and entry["level"] == "warning" and entry["client_id"] == "c_1"
    assert "request_id" not in entry


def test_access_decision_labels_are_bounded() -> None:
    metrics = Metrics()
    metrics.access_decision("x402", "allowed")
    metrics.access_decision("none", "challenged", 0.001)
    with pytest.raises(ValueError):
        metrics.access_decision("x402", "whatever-the-client-sent")
    with pytest.raises(ValueError):
        metrics.access_decision("kerberos", "allowed")
