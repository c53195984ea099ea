"""`python -m breaker_service`: serve on BREAKER_HOST:BREAKER_PORT with uvicorn (breaker_service/serving.py).

Settings come from the environment only; `--help` and `--version` print and exit 0. A bad setting or config file
ends the process with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from typing import TYPE_CHECKING

from breaker_service import __version__
from breaker_service.app import create_app
from breaker_service.config import ConfigError
from breaker_service.logs import configure_logging
from breaker_service.serving import serve
from breaker_service.settings import Settings, SettingsError

if TYPE_CHECKING:
    from collections.abc import Sequence

_SETTINGS_HELP = """\
settings (environment):
  REDIS_URL                 redis://, rediss://, redis+sentinel://h:p[,h:p]/master; unset: in-memory store (one replica)
  REDIS_CLUSTER=true        REDIS_URL names a Redis Cluster node
  BREAKER_HOST, BREAKER_PORT  where to serve (127.0.0.1:8080)
  BREAKER_WORKERS           server processes sharing the port: a number (default 1) or auto (one per core)
  BREAKER_CONFIG            TOML file of breaker defaults, overrides and probe URLs
  BREAKER_ADMIN_TOKENS, BREAKER_CLIENT_TOKENS  name:token,... (client routes are open while the latter is unset)
  BREAKER_LOG_LEVEL         DEBUG, INFO (default), WARNING, ERROR
See README.md, "Configuration", for every setting."""


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line: only --help and --version; everything else is set in the environment."""
    parser = argparse.ArgumentParser(
        prog="python -m breaker_service",
        description="Serve the shared circuit-breaker API, its dashboard and its metrics.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"breaker-service {__version__}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Read settings and config, then serve until SIGINT/SIGTERM."""
    parse_arguments(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level)
        app = create_app(settings)
    except (SettingsError, ConfigError) as exc:
        print(f"breaker-service: {exc}", file=sys.stderr)
        return 2
    store = "memory (one replica only)"
    if settings.redis_url is not None:
        where = urllib.parse.urlsplit(settings.redis_url)  # never print the password
        store = f"redis ({where.scheme}://{where.hostname}:{where.port or 6379})"
    print(f"breaker-service: store {store}, serving on http://{settings.host}:{settings.port}", file=sys.stderr)
    if settings.client_tokens is None:
        print(
            "breaker-service: WARNING: BREAKER_CLIENT_TOKENS is unset: client and reader routes are open to anyone"
            " who can reach this port (development mode)",
            file=sys.stderr,
        )
    return serve(settings, app)


if __name__ == "__main__":
    sys.exit(main())
