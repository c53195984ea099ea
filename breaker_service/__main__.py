"""`python -m breaker_service`: serve on BREAKER_HOST:BREAKER_PORT with uvicorn (breaker_service/serving.py).

A bad setting or config file ends the process with one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
import urllib.parse

from breaker_service.app import create_app
from breaker_service.config import ConfigError
from breaker_service.logs import configure_logging
from breaker_service.serving import serve
from breaker_service.settings import Settings, SettingsError


def main() -> int:
    """Read settings and config, then serve until SIGINT/SIGTERM."""
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
    return serve(settings, app)


if __name__ == "__main__":
    sys.exit(main())
