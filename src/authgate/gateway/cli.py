"""``authgate gateway --config FILE [--host H] [--port P] [--check]``: run the gateway (or only check its file).

The file is the gateway's own (``[gateway]``, ``[oauth]``, ``[agentauth]``, ``[x402]``, ``[token_exchange]``,
``[trust]``, ``[operations]``,
``[[routes]]``; see :mod:`authgate.gateway.config`), not the server's settings. A bad file exits with status 2
and one line naming the file, route and field. SIGHUP re-reads the file and swaps it in for new requests
(:mod:`authgate.gateway.runtime`); a bad file then keeps the running configuration and logs why.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from authgate.policy.model import PolicyError

#: What ``authgate serve`` accepts too (authgate.config): "trace" would make uvicorn log whole request bodies,
#: credentials included.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "gateway", help="run a reverse proxy applying route policies in front of any HTTP API")
    p.add_argument("--config", required=True, help="gateway TOML file (routes, upstream, mechanisms)")
    p.add_argument("--host", default=os.environ.get("AUTHGATE_GATEWAY_HOST", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1; AUTHGATE_GATEWAY_HOST)")
    # A string default goes through type=int when the command runs: a bad AUTHGATE_GATEWAY_PORT is a usage
    # error of `authgate gateway`, not a crash of every authgate command while the parser is built.
    p.add_argument("--port", type=int, default=os.environ.get("AUTHGATE_GATEWAY_PORT", "8080"),
                   help="port (default 8080; AUTHGATE_GATEWAY_PORT)")
    # The environment's values are checked when the command runs (cmd_gateway), like `authgate serve` checks them:
    # argparse checks only what is typed on the command line against choices.
    p.add_argument("--log-level", default=os.environ.get("AUTHGATE_LOG_LEVEL", "info"),
                   help=f"{', '.join(LOG_LEVELS)} (default info; AUTHGATE_LOG_LEVEL)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=os.environ.get("AUTHGATE_LOG_FORMAT", "text"),
                   help="text, or json: one object per line with request_id (default text; AUTHGATE_LOG_FORMAT)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds requests in flight get to finish after SIGTERM (default 30)")
    p.add_argument("--check", action="store_true", help="validate the file, print a summary and exit")
    p.set_defaults(func=cmd_gateway)
    return p


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the options (and the environment variables they default from), or None."""
    if not 1 <= args.port <= 65535:  # the event loop may wrap 70000 to 4464; 0 would be a random port
        return f"--port (or AUTHGATE_GATEWAY_PORT) must be between 1 and 65535, got {args.port}"
    if str(args.log_level).lower() not in LOG_LEVELS:
        return f"--log-level (or AUTHGATE_LOG_LEVEL) must be one of {', '.join(LOG_LEVELS)}, got {args.log_level!r}"
    if args.log_format not in LOG_FORMATS:
        return f"--log-format (or AUTHGATE_LOG_FORMAT) must be text or json, got {args.log_format!r}"
    if not math.isfinite(args.shutdown_timeout) or args.shutdown_timeout < 0:
        return f"--shutdown-timeout must be a finite number of seconds, 0 or more, got {args.shutdown_timeout:g}"
    return None


def cmd_gateway(args: argparse.Namespace) -> int:
    from authgate.gateway.config import build_gateway, load_gateway_config

    problem = _usage_error(args)
    if problem is not None:
        print(f"authgate gateway: {problem}", file=sys.stderr)
        return 2
    args.log_level = args.log_level.lower()
    try:
        config = load_gateway_config(args.config)
        app = build_gateway(config)
    except PolicyError as exc:
        print(f"authgate gateway: {exc}", file=sys.stderr)
        return 2
    routes = len(config.policy.routes)
    mechanisms = ", ".join(sorted(config.policy.mechanisms()))
    exchange = f"; token exchange for {config.token_exchange.resource}" if config.token_exchange else ""
    if args.check:
        print(f"{args.config}: ok ({routes} routes; {mechanisms}; upstream {config.upstream}{exchange})")
        return 0
    import asyncio

    import uvicorn

    from authgate.cli import configure_logging

    configure_logging(args.log_level, args.log_format)
    from authgate.gateway.serving import uvicorn_options

    # The upstream's Date and Server headers pass through: uvicorn must not add its own beside them. Our access
    # log (authgate.access: no query strings) replaces uvicorn's.
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, **uvicorn_options(args.log_level),
                                           timeout_graceful_shutdown=int(args.shutdown_timeout)))

    async def run() -> None:
        reloads = app.reload_on_signal()
        ops = ", ".join(f"{k.removesuffix('_path')} {v}" for k, v in config.operations.paths().items()) or "none"
        print(f"authgate gateway on http://{args.host}:{args.port} → {config.upstream} ({routes} routes; "
              f"{mechanisms}; identity {config.identity}; operations: {ops}{exchange}"
              f"{'; SIGHUP reloads ' + args.config if reloads else ''})", flush=True)
        await server.serve()

    # uvicorn.run's own way to run (uvloop where installed, per the "loop" option), with our reload handler
    # installed on that loop before serving.
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(run())
    return 0
