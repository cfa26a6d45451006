"""``authgate kill|revive|budgets|mandates|attestations``: the operator's side of trust and control.

- ``kill agent|client|user ID [--reason …]`` / ``revive agent|client|user ID`` / ``kill --list``: the kill
  switch (seen by every server process sharing the database on its next request; audited). An id not known
  here is still killed (pre-emptively: another server's client or agent, a payer address not seen yet), with a
  warning on stderr; a username given for ``user`` is refused with the user's subject to give instead.
- ``budgets set AGENT [--per-request N] [--per-day N] [--per-payee-day N] [--approver USERNAME]``, ``list``,
  ``remove AGENT``: amounts in atomic units of the asset; a payer address is stored lower-case (as payments
  are keyed).
- ``mandates issue --user U --agent A --route R… --payee P… --cap N [--period day] [--ttl S]`` prints the
  mandate JWT; ``list [--user U]``; ``revoke JTI``. Payees are 0x addresses; ``--ttl`` 60 s to 30 days.
- ``attestations issue --agent A --claim k=v… [--ttl S]`` prints an attestation signed by this server
  (``true``/``false`` become booleans and integers integers, as route policies compare them by JSON type).

Bad input is refused with a message on stderr and a non-zero exit: 2 for a value out of range (1 for an
unknown user, budget or mandate); nothing is written then.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from authgate.trust import wire as w

_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
MAX_ATTESTATION_TTL = 365 * 86400


def _claims(pairs: list[str]) -> dict[str, Any]:
    if not pairs:
        raise ValueError("give at least one --claim name=value")
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not _CLAIM_NAME.match(name):
            raise ValueError(f"--claim {pair[:80]!r}: expected name=value, the name 1 to 64 letters, digits, "
                             "'_', '.', ':', '-'")
        if name in out:
            raise ValueError(f"--claim {name!r} given twice")
        if value in ("true", "false"):
            out[name] = value == "true"
        elif value.lstrip("-").isdigit() and str(int(value)) == value:
            out[name] = int(value)
        else:
            out[name] = value
    return out


def _agent(value: str) -> str:
    """An agent key as budgets and the kill switch store it (payer addresses lower-case)."""
    if not value or len(value) > w.MAX_ID:
        raise ValueError(f"agent: 1 to {w.MAX_ID} characters")
    return value.lower() if _ADDRESS.match(value) else value


async def _kill_target(ctx: Any, kind: str, ident: str) -> tuple[str | None, str | None]:
    """(refusal, warning) for ``kill KIND ID``. An id not known here may be killed pre-emptively (another
    server's client or agent, a payer address, a client metadata document URL: the kill applies when it shows
    up), with a warning, so a typo does not pass silently; a username given for ``user`` is refused, as the
    kill list holds subjects and the kill would never match."""
    store = ctx.store
    if kind == w.KILL_USER:
        if await store.get_user(ident) is not None:
            return None, None
        named = await store.get_user_by_name(ident) if len(ident) <= 255 else None
        if named is not None:
            return (f"{ident!r} is a username; the kill switch takes the user's subject: authgate kill user "
                    f"{named.subject}"), None
        return None, f"no user with subject {ident!r} is known here; killed anyway (pre-emptive kill)"
    if kind == w.KILL_CLIENT:
        if ident.startswith("https://") or await store.get_client(ident) is not None:
            return None, None  # registered, or a client ID metadata document URL (never registered)
        return None, f"no client {ident!r} is registered here; killed anyway (pre-emptive kill)"
    if (_ADDRESS.match(ident) or await store.agentauth.get_agent(ident) is not None
            or await ctx.trust.agent_owner(ident) is not None or await store.get_client(ident) is not None):
        return None, None  # a payer address, an agent enrolled here (id or key thumbprint URN), a client
    return None, f"no agent {ident!r} is enrolled or registered here; killed anyway (pre-emptive kill)"


async def run(args: argparse.Namespace, settings: Any) -> int:
    from authgate.app import build_context
    from authgate.trust import mandates
    from authgate.trust.attestations import issue_attestation

    ctx = await build_context(settings)
    try:
        trust, switch = ctx.trust, ctx.killswitch
        if args.command in ("kill", "revive"):
            if getattr(args, "list", False):
                for k in await trust.kills():
                    print(f"{k.killed_at}\t{k.kind}\t{k.ident}\t{k.killed_by or '-'}\t{k.reason or '-'}")
                return 0
            if not args.kind or not args.ident:
                print("give KIND and ID", file=sys.stderr)
                return 2
            if args.command == "kill":
                refusal, warning = await _kill_target(ctx, args.kind, args.ident)
                if refusal:
                    print(f"refused: {refusal}", file=sys.stderr)
                    return 2
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
                done = await switch.kill(args.kind, args.ident, by="cli", reason=args.reason)
            else:
                done = await switch.revive(args.kind, args.ident, by="cli")
            print(f"{args.command}: {args.kind} {args.ident}" + ("" if done else " (no change)"))
            return 0
        if args.command == "budgets":
            if args.action == "set":
                approver = None
                if args.approver:
                    user = await ctx.store.get_user_by_name(args.approver)
                    if user is None:
                        print(f"no user {args.approver!r}", file=sys.stderr)
                        return 1
                    approver = user.subject
                budget = await trust.set_budget(_agent(args.agent), per_request=args.per_request,
                                                per_day=args.per_day, per_payee_day=args.per_payee_day,
                                                approver=approver, by="cli")
                print(json.dumps(budget.public(), indent=2))
            elif args.action == "list":
                print(json.dumps([b.public() for b in await trust.list_budgets()], indent=2))
            elif not await trust.delete_budget(_agent(args.agent), by="cli"):
                print(f"no budget for {args.agent!r}", file=sys.stderr)
                return 1
            return 0
        if args.command == "mandates":
            if args.action == "issue":
                bad = [p for p in [*args.payee, *([args.asset] if args.asset else [])] if not _ADDRESS.match(p)]
                if bad:
                    raise ValueError(f"{bad[0][:80]!r} is not a 0x address (40 hex digits)")
                if not 60 <= args.ttl <= mandates.MAX_TTL:
                    raise ValueError(f"--ttl: 60 to {mandates.MAX_TTL} seconds (30 days)")
                terms = mandates.Terms(tuple(args.route), tuple(args.payee), args.cap, args.period, args.asset)
                user = await ctx.store.get_user_by_name(args.user)
                if user is None:
                    print(f"no user {args.user!r}", file=sys.stderr)
                    return 1
                token, row = await mandates.issue(ctx.keys, trust, issuer=ctx.issuer, subject=user.subject,
                                                  agent=args.agent, terms=terms, ttl=args.ttl)
                print(json.dumps({"mandate": token, "jti": row.jti, "expires_at": row.expires_at}, indent=2))
            elif args.action == "list":
                subject = None
                if args.user:
                    user = await ctx.store.get_user_by_name(args.user)
                    if user is None:
                        print(f"no user {args.user!r}", file=sys.stderr)
                        return 1
                    subject = user.subject
                print(json.dumps([m.public() for m in await trust.list_mandates(subject=subject)], indent=2))
            elif not await trust.revoke_mandate(args.jti, by="cli"):
                print(f"no active mandate {args.jti[:80]!r} (unknown, or already revoked)", file=sys.stderr)
                return 1
            return 0
        claims = _claims(args.claim)
        if not 60 <= args.ttl <= MAX_ATTESTATION_TTL:
            raise ValueError(f"--ttl: 60 to {MAX_ATTESTATION_TTL} seconds (a year)")
        token = await issue_attestation(ctx.keys, issuer=ctx.issuer, agent=_agent(args.agent), claims=claims,
                                        ttl=args.ttl, now=ctx.now())
        print(token)
        return 0
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    finally:
        await ctx.store.close()


def add_parsers(sub: Any, server_args: Callable[[argparse.ArgumentParser], None],
                func: Callable[[argparse.Namespace], int]) -> None:
    for name, text in (("kill", "disable an agent, a client or a user's delegation everywhere, at once"),
                       ("revive", "undo a kill")):
        p = sub.add_parser(name, help=text)
        server_args(p)
        p.add_argument("kind", nargs="?", choices=w.KILL_KINDS, help="what the ident names")
        p.add_argument("ident", nargs="?", help="agent id / payer address, client_id, or user subject" + (
            "; an id not known here (another server's client or agent, a payer address not seen yet) is still "
            "killed, in advance, with a warning on stderr; a username is refused: give the subject (users list)"
            if name == "kill" else ""))
        if name == "kill":
            p.add_argument("--reason", help="why, kept in the kill list and the audit log")
            p.add_argument("--list", action="store_true", help="show the kill list")
        p.set_defaults(func=func)

    p = sub.add_parser("budgets", help="spend limits per agent (payments it makes to us)")
    server_args(p)
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("set", help="set an agent's spend limits (atomic units of the asset)")
    s.add_argument("agent", help="client_id, Agent Auth agent id or payer address")
    s.add_argument("--per-request", type=int, help="the most one payment may be")
    s.add_argument("--per-day", type=int, help="the most paid per UTC day")
    s.add_argument("--per-payee-day", type=int, help="the most paid to any one payee per UTC day")
    s.add_argument("--approver", help="username asked when a payment is over a limit")
    actions.add_parser("list", help="every budget, as JSON")
    actions.add_parser("remove", help="delete an agent's budget").add_argument("agent", help="as given to set")
    for each in actions.choices.values():
        server_args(each)
    p.set_defaults(func=func)

    p = sub.add_parser("mandates", help="signed spending mandates for agents")
    server_args(p)
    actions = p.add_subparsers(dest="action", required=True)
    i = actions.add_parser("issue", help="sign a mandate letting one agent pay for a user; prints the JWT")
    i.add_argument("--user", required=True, help="username of the person granting it")
    i.add_argument("--agent", required=True, help="client_id, Agent Auth agent id or payer address it is for")
    i.add_argument("--route", action="append", required=True, help="'METHOD /path' or '/path', '/*' suffix")
    i.add_argument("--payee", action="append", required=True, help="0x address that may be paid; repeatable")
    i.add_argument("--cap", type=int, required=True, help="atomic units per period")
    i.add_argument("--period", choices=w.PERIODS, default="day", help="what --cap is counted over (default day)")
    i.add_argument("--asset", help="0x address of the token contract (default: any)")
    i.add_argument("--ttl", type=int, default=86400,
                   help="seconds the mandate is valid, 60 to 30 days (default a day)")
    actions.add_parser("list", help="mandates, as JSON").add_argument("--user", help="only this user's (username)")
    actions.add_parser("revoke", help="revoke a mandate").add_argument("jti", help="its jti (from issue or list)")
    for each in actions.choices.values():
        server_args(each)
    p.set_defaults(func=func)

    p = sub.add_parser("attestations", help="attestations signed by this server")
    server_args(p)
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("issue", help="sign claims about an agent; prints the attestation JWT")
    a.add_argument("--agent", required=True, help="client_id, Agent Auth agent id or payer address it is about")
    a.add_argument("--claim", action="append", default=[], help="name=value (true/false become booleans)")
    a.add_argument("--ttl", type=int, default=3600,
                   help="seconds the attestation is valid, 60 to a year (default 3600)")
    server_args(a)
    p.set_defaults(func=func)
