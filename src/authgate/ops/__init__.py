"""Operations: metrics, request IDs, structured logs, health and readiness — what operators wire into the tools
they already run. Nothing here changes an authorization decision."""
