"""``authgate agents``: the operator's side of the agent provider and person server.

``enroll`` binds an agent's public key (``--jwk`` JSON or ``--jwk-file``; or ``--key-out`` to generate a key
pair and write the private key there, mode 0600) to a new ``aauth:<name>@<host>`` identifier for an existing
user and prints the agent token; ``token`` reissues one for the key on file (the owner's way back in when an
agent's token expired); ``list``; ``revoke`` (the agent gets nothing more and its tokens count as revoked);
``consents`` / ``forget`` show and revoke a person's remembered consent. Nothing secret is printed except the
agent token, which is what the command is for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


async def run(args: argparse.Namespace, settings: Any) -> int:
    from authgate.agentauth import provider
    from authgate.agentauth.server import AgentAuthServer
    from authgate.app import build_context

    ctx = await build_context(settings)
    try:
        srv = AgentAuthServer(ctx)
        store = ctx.store
        if args.action == "enroll":
            user = await store.get_user_by_name(args.owner)
            if user is None:
                print(f"no user {args.owner!r}", file=sys.stderr)
                return 1
            if args.key_out:
                from authgate.agent.agentauth import AgentKey

                key = AgentKey.generate()
                key.save(args.key_out)
                jwk: Any = key.public_jwk
            elif args.jwk_file:
                jwk = json.loads(await asyncio.to_thread(Path(args.jwk_file).read_text, encoding="utf-8"))
            elif args.jwk:
                jwk = json.loads(args.jwk)
            else:
                print("give --jwk, --jwk-file or --key-out", file=sys.stderr)
                return 2
            try:
                record, token, ttl = await provider.enroll(srv, owner=user.subject, name=args.name, jwk=jwk)
            except (provider.EnrolmentError, ValueError) as exc:
                print(f"refused: {exc}", file=sys.stderr)
                return 1
            print(json.dumps({"agent_id": record.agent_id, "agent_token": token, "expires_in": ttl}, indent=2))
            return 0
        if args.action == "token":
            agent = await store.agentauth.get_agent(args.agent_id)
            if agent is None or not agent.active:
                print("no such active agent", file=sys.stderr)
                return 1
            token, ttl = await provider.issue_agent_token(srv, agent)
            print(json.dumps({"agent_id": agent.agent_id, "agent_token": token, "expires_in": ttl}, indent=2))
            return 0
        if args.action == "list":
            owner = None
            if args.owner:
                user = await store.get_user_by_name(args.owner)
                if user is None:
                    print(f"no user {args.owner!r}", file=sys.stderr)
                    return 1
                owner = user.subject
            for a in await store.agentauth.list_agents(owner):
                owner_user = await store.get_user(a.owner)
                state = "active" if a.active else f"revoked at {a.revoked_at}"
                print(f"{a.agent_id}\t{owner_user.username if owner_user else a.owner}\t{a.jkt}\t{state}")
            return 0
        if args.action == "revoke":
            if not await store.agentauth.revoke_agent(args.agent_id):
                print("no such active agent", file=sys.stderr)
                return 1
            print(f"revoked {args.agent_id}")
            return 0
        user = await store.get_user_by_name(args.username)
        if user is None:
            print(f"no user {args.username!r}", file=sys.stderr)
            return 1
        if args.action == "consents":
            for c in await store.agentauth.list_consents(user.subject):
                print(f"{c['agent_id']}\t{c['resource']}\t{c['scope']}\texpires {c['expires_at']}")
            return 0
        count = await store.agentauth.revoke_consent(user.subject, args.agent, args.resource, args.scope)
        print(f"forgot {count} remembered consent(s)")
        return 0
    finally:
        await ctx.store.close()


def add_parser(sub: Any, server_args: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("agents", help="Agent Auth: enrolled agents and remembered consent")
    server_args(p)
    agents = p.add_subparsers(dest="action", required=True)
    e = agents.add_parser("enroll", help="bind an agent's public key to a new agent id for a user")
    server_args(e)
    e.add_argument("--owner", required=True, help="username of the person the agent acts for")
    e.add_argument("--name", required=True, help="local part of the agent id: a-z 0-9 . _ -")
    e.add_argument("--jwk", help="the agent's public JWK (JSON)")
    e.add_argument("--jwk-file", help="file holding the agent's public JWK")
    e.add_argument("--key-out", help="generate the agent's key and write it here (0600)")
    t = agents.add_parser("token", help="issue a fresh agent token for the enrolled key")
    server_args(t)
    t.add_argument("agent_id")
    lst = agents.add_parser("list")
    server_args(lst)
    lst.add_argument("--owner")
    r = agents.add_parser("revoke", help="revoke an agent and every token issued to it")
    server_args(r)
    r.add_argument("agent_id")
    c = agents.add_parser("consents", help="a person's remembered consent")
    server_args(c)
    c.add_argument("username")
    f = agents.add_parser("forget", help="revoke remembered consent (narrow with --agent/--resource/--scope)")
    server_args(f)
    f.add_argument("username")
    f.add_argument("--agent")
    f.add_argument("--resource")
    f.add_argument("--scope")
    return p
