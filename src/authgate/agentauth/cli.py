"""``authgate agents``: the operator's side of the agent provider and person server.

``enroll`` binds an agent's public key (``--jwk`` JSON or ``--jwk-file``; or ``--key-out`` to generate a key
pair and write the private key to that new file, mode 0600, once enrolled: never over an existing file) to a
new ``aauth:<name>@<host>`` identifier for an existing user and prints the agent token; ``token`` reissues one
for the key on file (the owner's way back in when an agent's token expired); ``list``; ``revoke`` (the agent
gets nothing more and its tokens count as revoked); ``consents`` / ``forget`` show and revoke a person's
remembered consent. Nothing secret is printed except the agent token, which is what the command is for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
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
            if sum(bool(given) for given in (args.key_out, args.jwk_file, args.jwk)) != 1:
                print("authgate: give one of --jwk, --jwk-file or --key-out", file=sys.stderr)
                return 2
            if args.key_out:
                return await _enroll_new_key(srv, store, user.subject, args.name, args.key_out)
            try:
                jwk = json.loads(await asyncio.to_thread(_read_jwk_file, args.jwk_file) if args.jwk_file
                                 else args.jwk)
            except OSError as exc:
                print(f"authgate: cannot read --jwk-file {args.jwk_file}: {exc.strerror or exc}", file=sys.stderr)
                return 2
            except ValueError as exc:  # not UTF-8, not JSON, too large
                where = f"--jwk-file {args.jwk_file}" if args.jwk_file else "--jwk"
                print(f"authgate: {where} is not a JSON public key: {exc}", file=sys.stderr)
                return 2
            if not isinstance(jwk, dict):
                print("authgate: the agent's key must be a JSON object (a public JWK)", file=sys.stderr)
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


#: Largest --jwk-file read (a public JWK is a few hundred bytes).
MAX_JWK_FILE = 64 * 1024


def _read_jwk_file(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read(MAX_JWK_FILE + 1)
    if len(data) > MAX_JWK_FILE:
        raise ValueError(f"larger than {MAX_JWK_FILE} bytes")
    return data.decode("utf-8")


async def _enroll_new_key(srv: Any, store: Any, owner: str, name: str, key_out: str) -> int:
    """``enroll --key-out FILE``: generate a key pair, enrol its public key, keep the private key in FILE.

    FILE is created exclusively (never replacing a file, nor following a symlink; mode 0600 from the start)
    before enrolling, so a path that cannot be used stops the enrolment, and the key is written into it only
    once the enrolment succeeded; a refused enrolment removes the empty file again."""
    from authgate.agent.agentauth import AgentKey
    from authgate.agentauth import provider

    try:
        path, fd = await asyncio.to_thread(_create_exclusively, key_out)
    except FileExistsError:
        print(f"authgate: --key-out {key_out} exists; refusing to overwrite it (it may hold another agent's "
              "private key): give a new path", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"authgate: cannot create --key-out {key_out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    written = False
    try:
        key = AgentKey.generate()
        try:
            record, token, ttl = await provider.enroll(srv, owner=owner, name=name, jwk=key.public_jwk)
        except (provider.EnrolmentError, ValueError) as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        try:
            await asyncio.to_thread(_write_all, fd, key.private_jwk().encode())
        except OSError as exc:
            # Enrolled, but the private key could not be kept: nobody could ever use the agent; take it back.
            await store.agentauth.revoke_agent(record.agent_id)
            print(f"authgate: cannot write --key-out {key_out}: {exc.strerror or exc}; {record.agent_id} was "
                  "revoked again, as its private key is lost: enrol under another name", file=sys.stderr)
            return 1
        written = True
        print(json.dumps({"agent_id": record.agent_id, "agent_token": token, "expires_in": ttl}, indent=2))
        return 0
    finally:
        os.close(fd)
        if not written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _create_exclusively(name: str) -> tuple[Path, int]:
    """A new file at ``name`` (``~`` expanded), mode 0600, opened for writing; missing directories are made
    (0700)."""
    path = Path(name).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # a file where a directory should be: not "the key file exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent)) from None
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


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
    e.add_argument("--key-out", help="generate the agent's key pair and write the private key to this new file "
                                     "(0600) once enrolled; an existing file is never overwritten")
    t = agents.add_parser("token", help="issue a fresh agent token for the enrolled key")
    server_args(t)
    t.add_argument("agent_id")
    lst = agents.add_parser("list", help="enrolled agents: id, owner, key thumbprint, active or revoked")
    server_args(lst)
    lst.add_argument("--owner", help="only this user's agents (username)")
    r = agents.add_parser("revoke", help="revoke an agent and every token issued to it")
    server_args(r)
    r.add_argument("agent_id")
    c = agents.add_parser("consents", help="a person's remembered consent")
    server_args(c)
    c.add_argument("username")
    f = agents.add_parser("forget", help="revoke remembered consent (narrow with --agent/--resource/--scope)")
    server_args(f)
    f.add_argument("username")
    f.add_argument("--agent", help="only consent given to this agent id")
    f.add_argument("--resource", help="only consent for this resource")
    f.add_argument("--scope", help="only consent for this scope")
    return p
