"""authgate: let AI agents reach APIs without a person in the loop, and with one only where risk demands.

The package is split by protocol (``oauth``, ``dcr``, ``resource``, ``agent`` …); ``app`` wires the server
together and ``cli`` exposes it. The agent SDK (``authgate.agent``) imports nothing from the server side.
"""

__version__ = "0.1.0"
