"""x402 v2 payments: wire types, the exact/EIP-3009 scheme, the facilitator, chains and the paywall."""
