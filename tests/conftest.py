"""Fixtures shared by every test module live in tests/fixtures/; this file only plugs them in."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.app",
    "tests.fixtures.service",
    "tests.fixtures.dependency",
]
