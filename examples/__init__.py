"""Runnable examples: the seed's orchestrator wired to the breaker service, its fake dependencies, the demo."""
