"""``authgate gateway --config FILE [--host H] [--port P] [--check]``: run the gateway (or only check its file).

The file is the gateway's own (``[gateway]``, ``[oauth]``, ``[agentauth]``, ``[x402]``, ``[[routes]]``; see
:mod:`authgate.gateway.config`), not the server's settings. A bad file exits with status 2 and one line naming
the file, route and field.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from authgate.policy.model import PolicyError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "gateway", help="run a reverse proxy applying route policies in front of any HTTP API")
    p.add_argument("--config", required=True, help="gateway TOML file (routes, upstream, mechanisms)")
    p.add_argument("--host", default=os.environ.get("AUTHGATE_GATEWAY_HOST", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1; AUTHGATE_GATEWAY_HOST)")
    p.add_argument("--port", type=int, default=int(os.environ.get("AUTHGATE_GATEWAY_PORT", "8080")),
                   help="port (default 8080; AUTHGATE_GATEWAY_PORT)")
    p.add_argument("--log-level", default=os.environ.get("AUTHGATE_LOG_LEVEL", "info"))
    p.add_argument("--check", action="store_true", help="validate the file, print a summary and exit")
    p.set_defaults(func=cmd_gateway)
    return p


def cmd_gateway(args: argparse.Namespace) -> int:
    from authgate.gateway.config import build_gateway, load_gateway_config

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
    import uvicorn

    from authgate.cli import configure_logging

    configure_logging(args.log_level, os.environ.get("AUTHGATE_LOG_FORMAT", "text"))
    print(f"authgate gateway on http://{args.host}:{args.port} → {config.upstream} ({routes} routes; {mechanisms}; "
          f"identity {config.identity})", flush=True)
    from authgate.gateway.serving import uvicorn_options

    # The upstream's Date and Server headers pass through: uvicorn must not add its own beside them.
    uvicorn.run(app, host=args.host, port=args.port, **uvicorn_options(args.log_level))
    return 0
