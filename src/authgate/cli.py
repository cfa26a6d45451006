"""The ``authgate`` command: run the server, run the demo, manage users, keys, clients and approvals.

Settings come from ``--config FILE`` (TOML), ``AUTHGATE_*`` environment variables and flags, in that order of
precedence (flags win). Run ``authgate <command> --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from authgate.config import ConfigError, Settings, load_settings


def _server_args(p: argparse.ArgumentParser, *, serving: bool = False) -> None:
    """The settings flags. Defaults are suppressed so the flags work both before and after a sub-action
    (``authgate users --data-dir d add x`` and ``authgate users add x --data-dir d``) without one copy
    overwriting the other. ``serving``: the command listens on ``--host``/``--port``; the others (management
    commands) take them only as what the default issuer ``http://HOST:PORT`` is made of."""
    quiet = argparse.SUPPRESS
    p.add_argument("--config", default=quiet, help="TOML settings file (also AUTHGATE_CONFIG)")
    if serving:
        p.add_argument("--host", default=quiet, help="address to bind (default 127.0.0.1; AUTHGATE_HOST)")
        p.add_argument("--port", type=int, default=quiet, help="port (default 8000; AUTHGATE_PORT)")
    else:
        p.add_argument("--host", default=quiet, help="the server's host; here only part of the default issuer "
                                                     "http://HOST:PORT (default 127.0.0.1; AUTHGATE_HOST)")
        p.add_argument("--port", type=int, default=quiet, help="the server's port; here only part of the default "
                                                               "issuer (default 8000; AUTHGATE_PORT)")
    p.add_argument("--issuer", default=quiet, help="public issuer URL, no trailing slash (default http://HOST:PORT)")
    p.add_argument("--database-url", default=quiet,
                   help="sqlite:///PATH or postgresql://USER:PASSWORD@HOST:5432/DB (default: authgate.db in the "
                        "data dir; AUTHGATE_DATABASE_URL)")
    p.add_argument("--data-dir", default=quiet, help="where the default SQLite database lives")


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        issuer=getattr(args, "issuer", None),
        database_url=getattr(args, "database_url", None),
        data_dir=getattr(args, "data_dir", None),
        **extra,
    )


#: Usernames: what the sign-in forms and CIBA's ``login_hint`` accept (they cut at 255) and the column holds.
MAX_USERNAME = 255
#: Largest ``--limit`` of the listing commands, and the bounds of ``clients initial-access-token --ttl``.
MAX_LIMIT = 10_000
MIN_IAT_TTL, MAX_IAT_TTL = 60, 365 * 86400


def check_username(name: str) -> str:
    """A new account's username: 1 to 255 printable characters, no whitespace (a name with a space or a
    control character cannot be typed reliably into a sign-in form or a ``login_hint``). ValueError otherwise."""
    if not name or len(name) > MAX_USERNAME:
        raise ValueError(f"a username has 1 to {MAX_USERNAME} characters")
    if not name.isprintable() or any(c.isspace() for c in name):
        raise ValueError("a username is printable characters without spaces")
    return name


def read_new_password(prompt: str, from_stdin: bool) -> str:
    """The first line of standard input (``--password-stdin``), else asked on the terminal. ValueError when
    there is no terminal to ask on (instead of getpass's echoing fallback and an EOFError traceback)."""
    import warnings

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    try:
        with warnings.catch_warnings():
            # getpass warns, then reads standard input with echo on, when it cannot open the terminal.
            warnings.simplefilter("error", getpass.GetPassWarning)
            return getpass.getpass(prompt)
    except getpass.GetPassWarning:
        raise ValueError("no terminal to ask for the password on: pipe it in on standard input with "
                         "--password-stdin") from None
    except EOFError:
        raise ValueError("no password given: type it when asked, or pipe it in with --password-stdin") from None


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``low`` to ``high``, else the usual argparse error (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text[:40]!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, not {text[:40]}")
        return value

    return parse


#: Libraries whose debug output prints SQL bound parameters or wire data (aiosqlite logs every statement with
#: its arguments, including the private signing key when one is stored). They never log below WARNING.
_QUIET_LOGGERS = ("aiosqlite", "asyncpg", "sqlalchemy", "httpcore", "hpack")


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log at ``level`` (``AUTHGATE_LOG_LEVEL``) as ``fmt`` text or JSON lines; debug is for authgate's own
    loggers, not the drivers'."""
    from authgate.ops.logs import handler

    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    root = logging.getLogger()
    if not any(getattr(h, "_authgate", False) for h in root.handlers):
        out = handler(fmt)
        out._authgate = True  # type: ignore[attr-defined]
        root.addHandler(out)
    root.setLevel(numeric)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def run_server(main: Any) -> None:
    """Run a server coroutine on uvloop where it is installed (a server process spends a large share of a
    small request in the event loop and socket writes), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from authgate.app import build_context, create_app

    settings = _settings(args, auto_approve=True if args.auto_approve else None,
                         workers=getattr(args, "workers", None))
    configure_logging(settings.log_level, settings.log_format)
    # authgate.access writes one line per request (route template, no query string); uvicorn's own access
    # log would print raw paths and queries, so it stays off. log_config=None keeps our handlers. On SIGTERM
    # uvicorn stops accepting and lets in-flight requests (settlements, token issuance) finish, at most
    # shutdown_timeout seconds; the lifespan then drains deliveries and closes the store.
    common: dict[str, Any] = {"host": settings.host, "port": settings.port, "log_level": settings.log_level,
                              "proxy_headers": False, "server_header": False, "access_log": False,
                              "log_config": None, "timeout_graceful_shutdown": settings.shutdown_timeout}
    if settings.workers > 1:
        # Each worker process builds its own context from the environment: hand the flags over through it.
        import os

        for flag in ("config", "host", "port", "issuer", "database_url", "data_dir", "workers"):
            value = getattr(args, flag, None)
            if value is not None:
                os.environ["AUTHGATE_" + flag.upper()] = str(value)
        if args.auto_approve:
            os.environ["AUTHGATE_AUTO_APPROVE"] = "1"
        # Migrate here, once, before the workers start: SQLite has no advisory lock, and N processes creating
        # the same tables at once would fail all but one of them.
        asyncio.run(_migrate(settings))
        print(f"authgate serving {settings.issuer_url} with {settings.workers} workers "
              f"(database: {_safe_db(settings)})", flush=True)
        uvicorn.run("authgate.app:factory", factory=True, workers=settings.workers, **common)
        return 0

    async def run() -> None:
        ctx = await build_context(settings)
        app = create_app(ctx, close_store=True)
        config = uvicorn.Config(app, **common)
        print(f"authgate serving {settings.issuer_url} (database: {_safe_db(settings)})", flush=True)
        await uvicorn.Server(config).serve()

    run_server(run())
    return 0


async def _migrate(settings: Settings) -> None:
    store = await _with_store(settings)
    await store.close()


def _safe_db(settings: Settings) -> str:
    url = settings.sqlalchemy_url
    if "@" in url:  # never print a password embedded in the URL
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


async def _with_store(settings: Settings) -> Any:
    from authgate.store import Store

    return await Store.open(settings.sqlalchemy_url)


def cmd_users(args: argparse.Namespace) -> int:
    from authgate.crypto.hashing import hash_password
    from authgate.store import User

    settings = _settings(args)

    async def run() -> int:
        store = await _with_store(settings)
        try:
            if args.action == "add":
                try:
                    check_username(args.username)
                except ValueError as exc:
                    print(f"authgate: {exc}", file=sys.stderr)
                    return 2
                if await store.get_user_by_name(args.username):
                    print(f"user {args.username!r} already exists", file=sys.stderr)
                    return 1
                try:
                    password = read_new_password(f"password for {args.username}: ", args.password_stdin)
                except ValueError as exc:
                    print(f"authgate: {exc}", file=sys.stderr)
                    return 2
                if len(password) < 8:
                    print("password must have at least 8 characters", file=sys.stderr)
                    return 2
                directory = await _directory(store, settings)
                try:
                    attributes = _attribute_pairs(args.attr or [])
                    for name, value in attributes.items():
                        directory.blind(name, value)  # refuse before the user exists
                except ValueError as exc:
                    print(f"authgate: {exc}", file=sys.stderr)
                    return 2
                _note_own_keys(list(attributes))
                subject = "u_" + secrets.token_urlsafe(12)
                await store.add_user(User(subject=subject, username=args.username,
                                          password_hash=hash_password(password), created_at=int(time.time())))
                await store.audit("user.added", subject=args.username)
                if attributes:
                    await directory.set_attributes(subject, attributes)
                print(f"added user {args.username}" + (f" with {len(attributes)} identity attribute(s)"
                                                       if attributes else ""))
            elif args.action == "set-attributes":
                directory = await _directory(store, settings)
                user = await store.get_user_by_name(args.username)
                if user is None:
                    print(f"no user {args.username!r}", file=sys.stderr)
                    return 1
                try:
                    pairs = list(args.pairs)
                    if args.stdin:
                        pairs += [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
                    attributes = _attribute_pairs(pairs)
                    await directory.set_attributes(user.subject, attributes)
                except ValueError as exc:
                    print(f"authgate: {exc}", file=sys.stderr)
                    return 2
                _note_own_keys(list(attributes))
                print(f"set {len(attributes)} identity attribute(s) for {args.username}: "
                      f"{', '.join(sorted(attributes)) or 'none'}")
            elif args.action == "import":
                return await _import_users(store, settings, args.file)
            elif args.action == "list":
                for user in await store.list_users():
                    channels = [f"email={user.email}" if user.email else "", f"phone={user.phone}" if user.phone
                                else "", f"webhook={user.webhook_url}" if user.webhook_url else "",
                                "admin" if user.is_admin else ""]
                    names = sorted(await store.identity_attributes(user.subject))
                    if names:
                        channels.append("attributes=" + ",".join(names))
                    print("\t".join([user.username, user.subject, *[c for c in channels if c]]))
            elif args.action == "set-channels":
                try:
                    values = _channel_values(args)
                except ValueError as exc:
                    print(f"authgate: {exc}", file=sys.stderr)
                    return 2
                if not values:
                    print("nothing to change: give --email, --phone, --webhook-url or --admin/--no-admin",
                          file=sys.stderr)
                    return 2
                if not await store.update_user(args.username, **values):
                    print(f"no user {args.username!r}", file=sys.stderr)
                    return 1
                await store.audit("user.channels_changed", subject=args.username, fields=sorted(values))
                print(f"updated {', '.join(sorted(values))} for {args.username}")
            elif args.action == "remove":
                if not await store.remove_user(args.username):
                    print(f"no user {args.username!r}", file=sys.stderr)
                    return 1
                await store.audit("user.removed", subject=args.username)
                print(f"removed user {args.username}")
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


async def _directory(store: Any, settings: Settings) -> Any:
    from authgate.aauth.directory import IdentityDirectory

    return await IdentityDirectory.open(store, settings)


def _attribute_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``name=value`` arguments to a mapping; ValueError naming the attribute, never echoing the value."""
    from authgate.aauth.normalize import check_name

    out: dict[str, str] = {}
    for i, pair in enumerate(pairs, 1):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"attribute {i}: expected name=value")
        try:
            check_name(name)
        except ValueError:
            raise ValueError(f"attribute {i}: names are a-z, 0-9 and _, starting with a letter") from None
        if name in out:
            raise ValueError(f"attribute {name} given twice")
        out[name] = value
    return out


def _note_own_keys(names: Sequence[str]) -> None:
    """Say on stderr which attribute names are not the standard ones. The directory deliberately takes any name
    of the right form as the operator's own key (docs/aauth.md, "your own keys"), so they are not refused; but a
    misspelt ``givenname`` would otherwise be stored silently and never match an agent's ``given_name``."""
    from authgate.aauth.normalize import KNOWN_ATTRIBUTES

    own = sorted({n for n in names if n not in KNOWN_ATTRIBUTES})
    if own:
        what = "is not a standard attribute" if len(own) == 1 else "are not standard attributes"
        print(f"authgate: note: {', '.join(own)} {what} ({', '.join(KNOWN_ATTRIBUTES)}): kept as custom "
              "attribute(s), matched only when an agent submits that very name; check the spelling", file=sys.stderr)


#: CSV columns of ``users import`` that are not identity attributes, and contact columns that are both.
_IMPORT_ACCOUNT = ("username", "password")
_IMPORT_CONTACT = {"email": "email", "phone": "phone_number", "phone_number": "phone_number"}


async def _import_users(store: Any, settings: Settings, path: str) -> int:
    """``authgate users import FILE.csv``: one user per row, created or updated; ``email``/``phone`` become both
    approval channels and blinded attributes, every other column a blinded attribute. A bad row is reported
    (line and column, never the value) and skipped; the exit status is 1 if any row was."""
    import csv

    from authgate.aauth.normalize import check_name
    from authgate.crypto.hashing import hash_password
    from authgate.store import User

    def read() -> list[list[str]]:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return list(csv.reader(fh))

    directory = await _directory(store, settings)
    try:
        rows = await asyncio.to_thread(read)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"authgate: cannot read {path}: {exc.__class__.__name__}", file=sys.stderr)
        return 2
    if not rows:
        print(f"authgate: {path} is empty", file=sys.stderr)
        return 2
    header = [h.strip().lower() for h in rows[0]]
    try:
        if "username" not in header:
            raise ValueError("the header row must name a username column")
        if len(set(header)) != len(header):
            raise ValueError("a column is named twice")
        if "phone" in header and "phone_number" in header:
            raise ValueError("give phone or phone_number, not both")
        for column in header:
            if column not in _IMPORT_ACCOUNT:
                check_name(column)
    except ValueError as exc:
        print(f"authgate: {path}: header: {exc}", file=sys.stderr)
        return 2
    _note_own_keys([_IMPORT_CONTACT.get(c, c) for c in header if c not in _IMPORT_ACCOUNT])
    added = updated = failed = 0
    for line, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"expected {len(header)} columns, got {len(row)}")
            cells = dict(zip(header, row, strict=True))
            username = cells.pop("username").strip()
            password = cells.pop("password", "")
            if not username:
                raise ValueError("username: empty")
            user = await store.get_user_by_name(username)
            if user is None:  # a new account; one made before the rule existed can still be updated
                try:
                    check_username(username)
                except ValueError as exc:
                    raise ValueError(f"username: {exc}") from None
            if password and len(password) < 8:
                raise ValueError("password: must have at least 8 characters")
            attributes: dict[str, str] = {}
            channels: dict[str, Any] = {}
            for column, value in cells.items():
                if not value.strip():
                    continue
                name = _IMPORT_CONTACT.get(column, column)
                attributes[name] = value
                normalized = directory.normalize(name, value)  # ValueError names the attribute only
                if column == "email":
                    contact = value.strip()
                    if len(contact) > 254 or not _EMAIL.match(contact):
                        raise ValueError("email: not usable as an approval channel")
                    channels["email"] = contact
                elif name == "phone_number":
                    channels["phone"] = normalized
        except ValueError as exc:
            print(f"line {line}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if user is None:
            user = User(subject="u_" + secrets.token_urlsafe(12), username=username,
                        password_hash=hash_password(password or secrets.token_urlsafe(32)),
                        created_at=int(time.time()))
            await store.add_user(user)
            await store.audit("user.added", subject=username, by="import")
            added += 1
        else:
            if password:
                channels["password_hash"] = hash_password(password)
            updated += 1
        if channels:
            await store.update_user(username, **channels)
        await directory.set_attributes(user.subject, attributes)
    print(f"imported {added + updated} user(s): {added} added, {updated} updated; {failed} row(s) with errors")
    return 1 if failed else 0


_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def _channel_values(args: argparse.Namespace) -> dict[str, Any]:
    """The user columns to change; an empty value clears a channel. Raises ValueError for a bad value."""
    from urllib.parse import urlsplit

    from authgate.config import is_loopback_host

    values: dict[str, Any] = {}
    if args.email is not None:
        if args.email and (len(args.email) > 254 or not _EMAIL.match(args.email)):
            raise ValueError(f"not an e-mail address: {args.email!r}")
        values["email"] = args.email or None
    if args.phone is not None:
        if args.phone and not _E164.match(args.phone):
            raise ValueError(f"phone must be in E.164 form, like +14155550123: {args.phone!r}")
        values["phone"] = args.phone or None
    if args.webhook_url is not None:
        url = args.webhook_url
        if url:
            try:
                parts = urlsplit(url)
                host = parts.hostname
                parts.port  # noqa: B018 - raises ValueError for a malformed port
            except ValueError as exc:
                raise ValueError(f"not a URL: {url!r}") from exc
            if (len(url) > 2048 or not host or parts.username is not None or parts.fragment
                    or not url.isascii() or any(c.isspace() for c in url)):
                raise ValueError(f"webhook URL must be an absolute URL without credentials or fragment: {url!r}")
            if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
                raise ValueError(f"webhook URL must use https (http only on loopback): {url!r}")
        values["webhook_url"] = url or None
    if args.admin is not None:
        values["is_admin"] = bool(args.admin)
    return values


def cmd_approvals(args: argparse.Namespace) -> int:
    from authgate.approvals import ApprovalError, ApprovalService
    from authgate.clock import SystemClock

    settings = _settings(args)

    async def run() -> int:
        store = await _with_store(settings)
        try:
            service = ApprovalService(store, SystemClock())
            if args.action == "list":
                if args.all:
                    found = [await service.get(row.id) for row in await store.list_approvals(limit=args.limit)]
                    requests = [r for r in found if r is not None]
                else:
                    requests = await service.pending_for(None, limit=args.limit)
                names = {u.subject: u.username for u in await store.list_users()}
                for r in requests:
                    who = names.get(r.subject, r.subject) if r.subject else "-"
                    print("\t".join([r.id, r.kind, r.status, who or "-", r.client_id or "-",
                                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.expires_at))]))
                return 0
            approve = args.action == "approve"
            try:
                decided = await service.decide(args.id, approve, by="operator", channel="cli", is_admin=True)
            except ApprovalError as exc:
                messages = {"not_found": "no such request", "already_decided": "already decided",
                            "expired": "expired"}
                print(f"approval {args.id!r}: {messages.get(exc.code, exc.code)}", file=sys.stderr)
                return 1
            print(f"{decided.status} {decided.id}")
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_keys(args: argparse.Namespace) -> int:
    from authgate.crypto.keys import KeyRing

    settings = _settings(args)

    async def run() -> int:
        store = await _with_store(settings)
        try:
            keys = KeyRing(store)
            if args.action == "rotate":
                await keys.ensure_key()
                # Running servers may sign with the old key until they reload (up to 60 s), and what they
                # signed must verify until it expires.
                minimum = settings.access_token_ttl + 60
                keep = args.keep_old_for if args.keep_old_for is not None else settings.access_token_ttl + 300
                if keep < minimum:
                    print(f"--keep-old-for must be at least {minimum} s (access-token lifetime + 60 s), or tokens "
                          "already issued would stop verifying", file=sys.stderr)
                    return 2
                kid = await keys.rotate(keep_old_for=keep)
                await store.audit("keys.rotated", kid=kid)
                print(f"now signing with {kid}; previous keys stay published for {keep} s")
            else:
                for row in await store.list_signing_keys():
                    state = "active" if row.retired_at is None else f"retired, removed after {row.remove_after}"
                    print(f"{row.kid}\t{row.alg}\t{state}")
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_clients(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> int:
        store = await _with_store(settings)
        try:
            if args.action == "list":
                for c in await store.list_clients():
                    print(f"{c.client_id}\t{c.metadata.get('client_name', '')}\t"
                          f"{'dynamic' if c.dynamic else 'static'}")
            elif args.action == "remove":
                if not await store.delete_client(args.client_id):
                    print(f"no client {args.client_id!r}", file=sys.stderr)
                    return 1
                await store.audit("client.deleted", client_id=args.client_id, by="cli")
                print(f"removed client {args.client_id} and revoked its tokens")
            elif args.action == "add":
                from authgate.dcr.admin import add_static_client
                from authgate.errors import OAuthError

                try:
                    metadata = json.loads(args.metadata)
                except ValueError as exc:  # JSONDecodeError, or a number too long to convert
                    print(f"authgate: client metadata is not JSON: {exc}", file=sys.stderr)
                    return 2
                if not isinstance(metadata, dict):
                    print('authgate: client metadata must be a JSON object, e.g. \'{"client_name":"rs",'
                          '"grant_types":["client_credentials"]}\'', file=sys.stderr)
                    return 2
                try:
                    info = await add_static_client(store, settings, metadata)
                except OAuthError as exc:  # invalid_client_metadata, invalid_redirect_uri, ...
                    print(f"authgate: {exc.error}: {exc.description or 'refused'}", file=sys.stderr)
                    return 2
                print(json.dumps(info, indent=2))
            elif args.action == "initial-access-token":
                from authgate.dcr.initial_access import issue_initial_access_token

                token = await issue_initial_access_token(store, args.ttl, args.single_use)
                await store.audit("initial_access_token.issued", by="cli", ttl=args.ttl, single_use=args.single_use)
                print(token)
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_audit(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> int:
        store = await _with_store(settings)
        try:
            for event in reversed(await store.audit_events(limit=args.limit)):
                print(json.dumps(event, default=str, sort_keys=True))
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_facilitator(args: argparse.Namespace) -> int:
    """Run the x402 facilitator alone, at its root (``/verify``, ``/settle``, ``/supported``)."""
    import contextlib

    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from authgate.x402.facilitator.mount import LazyFacilitator

    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> None:
        store = await _with_store(settings)
        facilitator = LazyFacilitator(settings, store)
        ready = await facilitator.get()  # build the chain now: a bad chain setting fails here, not per request

        @contextlib.asynccontextmanager
        async def lifespan(_: Any) -> Any:
            try:
                yield
            finally:
                await facilitator.aclose()
                await store.close()

        app = Starlette(routes=[Mount("/", app=facilitator)], lifespan=lifespan)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                                proxy_headers=False, server_header=False, access_log=False, log_config=None)
        kinds = ", ".join(k.network for k in ready.supported().kinds)
        auth = "bearer token required" if settings.x402_facilitator_token else "no authentication: keep it on loopback"
        print(f"authgate facilitator on http://{settings.host}:{settings.port} ({kinds}; {auth}; "
              f"database: {_safe_db(settings)})", flush=True)
        await uvicorn.Server(config).serve()

    run_server(run())
    return 0


def cmd_payments(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def run() -> int:
        store = await _with_store(settings)
        try:
            rows = await store.payments.list(status=args.status, payer=args.payer, limit=args.limit)
            if args.json:
                print(json.dumps([r.public() for r in rows], indent=2))
            else:
                for r in rows:
                    print(f"{r.created_at}\t{r.status}\t{r.network}\t{r.payer}\t{r.payee}\t{r.amount}\t"
                          f"{r.tx_hash or '-'}\t{r.resource_url or '-'}")
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_agents(args: argparse.Namespace) -> int:
    from authgate.agentauth import cli as agents_cli

    return asyncio.run(agents_cli.run(args, _settings(args)))


def cmd_trust(args: argparse.Namespace) -> int:
    from authgate.trust import cli as trust_cli

    return asyncio.run(trust_cli.run(args, _settings(args)))


def cmd_admins(args: argparse.Namespace) -> int:
    from authgate.dashboard import cli as admins_cli

    return asyncio.run(admins_cli.run(args, _settings(args)))


def cmd_demo(args: argparse.Namespace) -> int:
    from authgate.demo.run import main as demo_main

    return demo_main(verbose=args.verbose, keep_serving=args.serve)


def cmd_devchain(args: argparse.Namespace) -> int:
    from authgate.config import is_loopback_host
    from authgate.x402.chain.devchain import MAX_BLOCK_TIME, MIN_BLOCK_TIME, parse_fund, serve

    for spec in args.fund:
        try:
            parse_fund(spec)
        except ValueError as exc:
            print(f"authgate devchain: {exc}", file=sys.stderr)
            return 2
    if not 1 <= args.port <= 65535:
        print(f"authgate devchain: --port must be between 1 and 65535, got {args.port}", file=sys.stderr)
        return 2
    if args.block_time is not None and not MIN_BLOCK_TIME <= args.block_time <= MAX_BLOCK_TIME:
        print(f"authgate devchain: --block-time must be between {MIN_BLOCK_TIME:g} and {MAX_BLOCK_TIME:g} seconds",
              file=sys.stderr)
        return 2
    if not is_loopback_host(args.host):
        print(f"authgate devchain: warning: serving test money on non-loopback {args.host}", file=sys.stderr)
    asyncio.run(serve(args.host, args.port, list(args.fund), block_time=args.block_time))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="authgate", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the authorization server")
    _server_args(p, serving=True)
    p.add_argument("--auto-approve", action="store_true",
                   help="DEVELOPMENT ONLY: approve every authorization request without a person (loopback only)")
    p.add_argument("--workers", type=int, default=None,
                   help="server processes on one port (default 1; AUTHGATE_WORKERS); use PostgreSQL beyond 1")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="start the server, a demo API and an MCP server, and let agents in")
    p.add_argument("--verbose", action="store_true", help="log what the servers do (INFO), not only errors")
    p.add_argument("--serve", action="store_true",
                   help="after the demo keep its servers up (Ctrl-C stops) and make an operator account for the "
                        "dashboard")
    p.set_defaults(func=cmd_demo)

    from authgate.dashboard.cli import add_parser as add_admins_parser

    add_admins_parser(sub, _server_args).set_defaults(func=cmd_admins)

    p = sub.add_parser("users", help="manage resource owners who can sign in and consent")
    _server_args(p)
    users = p.add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="create a user (password asked on the terminal, or --password-stdin)")
    _server_args(add)
    add.add_argument("username")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--attr", action="append", metavar="NAME=VALUE",
                     help="an identity attribute for AAuth matching (stored only as a keyed hash); repeatable")
    sa_ = users.add_parser("set-attributes", help="replace the user's identity attributes (stored only as keyed "
                                                  "hashes); values on the command line stay in shell history, "
                                                  "prefer --stdin or import")
    _server_args(sa_)
    sa_.add_argument("username")
    sa_.add_argument("pairs", nargs="*", metavar="NAME=VALUE")
    sa_.add_argument("--stdin", action="store_true", help="also read NAME=VALUE lines from standard input")
    imp = users.add_parser("import", help="create or update users from a CSV file (header: username,password,"
                                          "email,phone,given_name,family_name,birthdate,postal_code,acct_last4,"
                                          "...); email/phone are also approval channels")
    _server_args(imp)
    imp.add_argument("file")
    _server_args(users.add_parser("list", help="every user: username, subject, approval channels, attribute "
                                               "names"))
    rm = users.add_parser("remove", help="delete a user")
    _server_args(rm)
    rm.add_argument("username")
    ch = users.add_parser("set-channels", help="where the user gets approval requests; an empty value clears one")
    _server_args(ch)
    ch.add_argument("username")
    ch.add_argument("--email", help="e-mail address")
    ch.add_argument("--phone", help="mobile number for SMS, E.164 (+14155550123)")
    ch.add_argument("--webhook-url", help="https URL (http only on loopback) that receives signed requests")
    ch.add_argument("--admin", action=argparse.BooleanOptionalAction, default=None,
                    help="may see and decide everyone's approval requests")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("approvals", help="requests waiting for a person: list, approve or deny as the operator")
    _server_args(p)
    approvals = p.add_subparsers(dest="action", required=True)
    lst = approvals.add_parser("list", help="pending requests (--all: every state)")
    _server_args(lst)
    lst.add_argument("--all", action="store_true", help="include approved, denied and expired requests")
    lst.add_argument("--limit", type=bounded_int(1, MAX_LIMIT), default=100,
                     help=f"at most this many, 1 to {MAX_LIMIT} (default 100)")
    for action in ("approve", "deny"):
        dec = approvals.add_parser(action, help=f"{action} a pending request as the operator")
        _server_args(dec)
        dec.add_argument("id")
    p.set_defaults(func=cmd_approvals)

    p = sub.add_parser("keys", help="signing keys")
    _server_args(p)
    keys = p.add_subparsers(dest="action", required=True)
    rot = keys.add_parser("rotate", help="sign with a new key; old keys keep verifying until their tokens expire")
    _server_args(rot)
    rot.add_argument("--keep-old-for", type=int,
                     help="seconds to keep publishing old keys (at least the access-token lifetime + 60 s)")
    _server_args(keys.add_parser("list", help="signing keys: kid, algorithm, active or retired"))
    p.set_defaults(func=cmd_keys)

    from authgate.agentauth.cli import add_parser as add_agents_parser

    add_agents_parser(sub, _server_args).set_defaults(func=cmd_agents)

    p = sub.add_parser("clients", help="registered clients")
    _server_args(p)
    clients = p.add_subparsers(dest="action", required=True)
    _server_args(clients.add_parser("list", help="every client: client_id, name, static or dynamic"))
    crm = clients.add_parser("remove", help="delete a client and revoke its tokens")
    _server_args(crm)
    crm.add_argument("client_id")
    cadd = clients.add_parser("add", help="register a static client from JSON metadata")
    _server_args(cadd)
    cadd.add_argument("metadata", help='client metadata JSON, e.g. \'{"client_name":"rs","grant_types":'
                                       '["client_credentials"]}\'')
    iat = clients.add_parser("initial-access-token", help="issue a token that allows one (or more) registrations")
    _server_args(iat)
    iat.add_argument("--ttl", type=bounded_int(MIN_IAT_TTL, MAX_IAT_TTL), default=86400,
                     help=f"seconds the token stays valid, {MIN_IAT_TTL} to {MAX_IAT_TTL} (a year); default a day")
    iat.add_argument("--single-use", action="store_true", help="the first registration spends the token")
    p.set_defaults(func=cmd_clients)

    p = sub.add_parser("audit", help="print the latest audit events (grants, denials, registrations), oldest first")
    _server_args(p)
    p.add_argument("--limit", type=bounded_int(1, MAX_LIMIT), default=50,
                   help=f"how many of the latest events, 1 to {MAX_LIMIT} (default 50)")
    p.set_defaults(func=cmd_audit)

    from authgate.trust.cli import add_parsers as add_trust_parsers

    add_trust_parsers(sub, _server_args, cmd_trust)

    from authgate.gateway.cli import add_parser as add_gateway_parser

    add_gateway_parser(sub)

    p = sub.add_parser("facilitator", help="run the x402 facilitator alone (/verify, /settle, /supported)")
    _server_args(p, serving=True)
    p.set_defaults(func=cmd_facilitator)

    p = sub.add_parser("payments", help="x402 payments settled by the facilitator")
    _server_args(p)
    payments = p.add_subparsers(dest="action", required=True)
    plist = payments.add_parser("list", help="latest payments first")
    _server_args(plist)
    plist.add_argument("--status", choices=["pending", "submitted", "settled", "failed"],
                       help="only payments in this state")
    plist.add_argument("--payer", help="payer address (any case)")
    plist.add_argument("--limit", type=bounded_int(1, MAX_LIMIT), default=100,
                       help=f"at most this many, 1 to {MAX_LIMIT} (default 100)")
    plist.add_argument("--json", action="store_true", help="one JSON array instead of tab-separated lines")
    p.set_defaults(func=cmd_payments)

    p = sub.add_parser("devchain", help="serve the embedded x402 chain (TestUSDC) as a local JSON-RPC node")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8545, help="port (default 8545)")
    p.add_argument("--fund", action="append", default=[], metavar="LABEL=USDC",
                   help="mint test USDC (and gas money) to a labelled account or 0x address; repeatable")
    p.add_argument("--block-time", type=float, default=None, metavar="SECONDS",
                   help="keep a mempool and mine a block every SECONDS, like a real chain (default: each "
                        "transaction is mined at once)")
    p.set_defaults(func=cmd_devchain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"authgate: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
