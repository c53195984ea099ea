"""`python -m examples.fake_dependencies`: serve the five fakes on FAKES_HOST:FAKES_PORT (127.0.0.1:8090)."""

from __future__ import annotations

import os

import uvicorn

from examples.fake_dependencies.app import create_app


def main() -> None:
    host = os.environ.get("FAKES_HOST", "127.0.0.1")
    port = int(os.environ.get("FAKES_PORT", "8090"))
    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
