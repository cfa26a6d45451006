"""``authgate admins``: who may sign in to the dashboard. The admin role is the ``users.is_admin`` column, so it
is shared by every process and takes effect on the next request (the dashboard checks it on each one).

- ``admins add NAME``: make an existing user an operator, or create one (password from a prompt, or the first
  line of standard input with ``--password-stdin``); audited as ``admin.granted``.
- ``admins remove NAME``: take the role away (the user stays; their dashboard sessions stop working at once).
- ``admins list``: the operators.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable
from typing import Any

MIN_PASSWORD = 12


def add_parser(sub: Any, server_args: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("admins", help="operators who may sign in to the dashboard (/admin)")
    server_args(p)
    admins = p.add_subparsers(dest="action", required=True)
    add = admins.add_parser("add", help="make a user an operator (creating the user if needed)")
    server_args(add)
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true", help="a new user's password from standard input")
    rm = admins.add_parser("remove", help="take the operator role away (the user stays)")
    server_args(rm)
    rm.add_argument("username")
    server_args(admins.add_parser("list", help="the operators: username and subject"))
    return p


async def run(args: argparse.Namespace, settings: Any) -> int:
    from authgate.crypto.hashing import hash_password
    from authgate.store import Store, User

    store = await Store.open(settings.sqlalchemy_url)
    try:
        if args.action == "list":
            for each in await store.list_users():
                if each.is_admin:
                    print(f"{each.username}\t{each.subject}")
            return 0
        name = args.username[:255]
        user = await store.get_user_by_name(name)
        if args.action == "remove":
            if user is None or not user.is_admin:
                print(f"{name!r} is not an operator", file=sys.stderr)
                return 1
            await store.update_user(name, is_admin=False)
            await store.audit("admin.revoked", subject=user.subject, by="cli")
            print(f"{name} is no longer an operator")
            return 0
        if user is None:
            from authgate.cli import check_username, read_new_password

            try:
                check_username(args.username)
                password = read_new_password(f"new password for operator {name}: ", args.password_stdin)
            except ValueError as exc:
                print(f"authgate: {exc}", file=sys.stderr)
                return 2
            if len(password) < MIN_PASSWORD:
                print(f"an operator's password must have at least {MIN_PASSWORD} characters", file=sys.stderr)
                return 2
            subject = "u_" + secrets.token_urlsafe(12)
            await store.add_user(User(subject=subject, username=name, password_hash=hash_password(password),
                                      created_at=int(store.clock.now()), is_admin=True))
            await store.audit("user.added", subject=subject)
            await store.audit("admin.granted", subject=subject, by="cli")
            print(f"added operator {name}")
            return 0
        if user.is_admin:
            print(f"{name} is already an operator")
            return 0
        await store.update_user(name, is_admin=True)
        await store.audit("admin.granted", subject=user.subject, by="cli")
        print(f"{name} is now an operator")
        return 0
    finally:
        await store.close()
