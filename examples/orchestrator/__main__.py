"""`python -m examples.orchestrator`: serve the orchestrator (settings from the environment, see settings.py)."""

from __future__ import annotations

import uvicorn

from examples.orchestrator.app import create_app
from examples.orchestrator.logs import configure_logging
from examples.orchestrator.settings import Settings


def main() -> None:
    settings = Settings.from_env()
    configure_logging()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
