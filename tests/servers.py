"""Real HTTP servers on loopback for interop tests (shared with the demo)."""

from authgate.demo.servers import free_port, serve

__all__ = ["free_port", "serve"]
