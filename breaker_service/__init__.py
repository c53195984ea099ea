"""Shared circuit-breaker service."""

__version__ = "0.2.0"
