"""``authgate demo``: the server, a protected notes API and an MCP server on loopback, and agents that get in
through each mechanism by themselves, with a step-by-step report. Development use only (auto-approve)."""
