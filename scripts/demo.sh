#!/usr/bin/env bash
# The main job: the authorization server, a demo API and an MCP server, and agents that get in by themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/authgate demo "$@"
