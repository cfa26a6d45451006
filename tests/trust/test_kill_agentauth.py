"""The kill switch on Agent Auth signatures: a killed agent (or its person) is refused at the person server
(its agent token and the tokens issued to it count as revoked), and works again after a revive."""

from __future__ import annotations

import pytest

from tests.agentauth.test_person_server import post_ps
from tests.interop.test_aauth_protocol import RES, World, person_token, world  # noqa: F401


@pytest.mark.parametrize("kind", ["agent", "user"])
async def test_killed_agent_or_person_is_refused_everywhere(world: World, kind: str) -> None:  # noqa: F811
    w = world
    presented = await person_token(w)
    ident = w.agent_id if kind == "agent" else w.owner
    assert await w.ctx.killswitch.kill(kind, ident, by="admin")
    r = await post_ps(w, "/agentauth/person-token", {"resource": RES})
    assert r.status_code == 401 and r.headers["signature-error"] == "error=revoked_jwt"
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": "x", "presented_token": presented})
    assert r.status_code == 401 and r.headers["signature-error"] == "error=revoked_jwt"
    assert await w.ctx.killswitch.revive(kind, ident, by="admin")
    assert (await post_ps(w, "/agentauth/person-token", {"resource": RES})).status_code == 200
