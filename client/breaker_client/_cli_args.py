"""`breakerctl`'s command line. Argument types check values up front: argparse turns their `ArgumentTypeError`
into a usage error (exit 2) before anything is sent to the service."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Final

import httpx

from breaker_client import __version__
from breaker_client._cli_retry import ATTEMPTS_DEFAULT, ATTEMPTS_MAX
from breaker_client.protocol.models import MAX_SECONDS, NAME_PATTERN, is_valid_name

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_URL", "LIMIT_MAX", "build_parser", "check"]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
LIMIT_MAX: Final = 1000
"""The service's largest `?limit=` of history and of the audit trail."""
REASON_MAX: Final = 500
MODES: Final = ("NORMAL", "PARTIAL", "READ_ONLY", "OFFLINE", "EMERGENCY")
_FIELD: Final = re.compile(r"^[a-z_]{1,64}$")
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")  # the service's rule


def _breaker_name(value: str) -> str:
    if not is_valid_name(value):
        raise argparse.ArgumentTypeError(f"invalid breaker name {value!r}: names match {NAME_PATTERN}")
    return value


def _url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"invalid URL {value!r}: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"invalid URL {value!r}: expected http(s)://host[:port]")
    return value.rstrip("/")


def _reason(value: str) -> str:
    if not value.strip() or len(value) > REASON_MAX:
        raise argparse.ArgumentTypeError(f"a reason is 1 to {REASON_MAX} characters, not blank")
    return value


def _ttl(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_SECONDS:  # also refuses nan
        raise argparse.ArgumentTypeError(f"invalid TTL {value!r}: seconds, above 0 and at most {MAX_SECONDS:g}")
    return seconds


def _setting(value: str) -> tuple[str, Any]:
    """`key=value` for `config --set`: the value as JSON (`5`, `0.5`, `null`, `true`), else as a string."""
    key, equals, raw = value.partition("=")
    if not equals or not _FIELD.fullmatch(key):
        raise argparse.ArgumentTypeError(f"invalid setting {value!r}: expected key=value, e.g. failure_threshold=5")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def _idempotency_key(value: str) -> str:
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid idempotency key {value!r}: 1 to 255 visible ASCII characters")
    return value


def _mode(value: str) -> str:
    if value.upper() not in MODES:
        raise argparse.ArgumentTypeError(f"invalid mode {value!r}: one of {', '.join(MODES)}")
    return value.upper()


def _count(high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or not 1 <= int(value) <= high:
            raise argparse.ArgumentTypeError(f"invalid number {value!r}: from 1 to {high}")
        return int(value)

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The command line; `--url` and `--token` default to the environment as it is now."""
    parser = argparse.ArgumentParser(
        prog="breakerctl",
        description="Read and operate the shared circuit breakers.",
        epilog="exit codes: 0 ok, 1 service error (ORC code on stderr), 2 usage, 3 service unreachable, 130 Ctrl-C "
        "(0 for watch)",
    )
    parser.add_argument("--version", action="version", version=f"breakerctl {__version__}")
    default_url = os.environ.get("BREAKER_URL") or DEFAULT_URL
    parser.add_argument("--url", type=_url, default=default_url, help=f"service URL (env BREAKER_URL; {DEFAULT_URL})")
    token = os.environ.get("BREAKER_TOKEN") or None
    parser.add_argument("--token", default=token, help="bearer token (env BREAKER_TOKEN)")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the service's JSON instead of a table")
    # Not a default of 3 here: `check` tells a --retries given to a read from one left out.
    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument(
        "--retries",
        type=_count(ATTEMPTS_MAX),
        metavar="N",
        help=f"attempts in all while the write's outcome is unknown (default {ATTEMPTS_DEFAULT}; 1: no retry)",
    )
    writes.add_argument(
        "--idempotency-key",
        type=_idempotency_key,
        metavar="KEY",
        help="the key printed by a run whose outcome was unknown: retries it safely (default: a new key)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, *, named: bool = True, write: bool = False) -> argparse.ArgumentParser:
        parents = [output, writes] if write else [output]
        sub = commands.add_parser(name, parents=parents, help=summary, description=summary)
        if named:
            sub.add_argument("name", type=_breaker_name, metavar="NAME", help="breaker name")
        return sub

    command("list", "every breaker: state (the forced one while forced), forced, generation, failures", named=False)
    command("show", "one breaker in full")
    history = command("history", "a breaker's transitions, newest first")
    history.add_argument("--limit", type=_count(LIMIT_MAX), metavar="N", help="at most N (service default 100)")
    for action, state in (("force-open", "OPEN"), ("force-close", "CLOSED")):
        force = command(action, f"hold a breaker {state} until reset, or for --ttl seconds (admin)", write=True)
        force.add_argument("--reason", type=_reason, required=True, help="why, for the audit trail")
        force.add_argument("--ttl", type=_ttl, metavar="S", help="lift the force after S seconds")
        force.add_argument("--create", action="store_true", help="create the breaker if unknown (else: exit 1, 404)")
    reset = command("reset", "back to a fresh CLOSED: counts cleared, force lifted (admin)", write=True)
    reset.add_argument("--reason", type=_reason, required=True, help="why, for the audit trail")
    watch = command("watch", "print each state change as it happens, until Ctrl-C", named=False)
    watch.add_argument("--count", type=_count(sys.maxsize), metavar="N", help="stop after N state changes")
    audit = command("audit", "admin actions (config, delete, force, reset) on breakers, newest first", named=False)
    audit.add_argument("--limit", type=_count(LIMIT_MAX), default=50, metavar="N", help="at most N (default 50)")
    delete = command("delete", "remove a breaker and its history (admin)", write=True)
    delete.add_argument("--reason", type=_reason, help="why, for the audit trail")
    config = command("config", "a breaker's config; --set k=v merges fields into it (admin)", write=True)
    config.add_argument(
        "--set", type=_setting, action="append", metavar="K=V", help="a config field to change (repeatable)"
    )
    config.add_argument("--reason", type=_reason, help="why, for the audit trail (with --set)")
    degradation = command(
        "degradation", "the fleet's degradation mode; --set forces one, --lift lifts it", named=False, write=True
    )
    change = degradation.add_mutually_exclusive_group()
    change.add_argument("--set", type=_mode, metavar="MODE", help=f"force a mode (admin): {', '.join(MODES)}")
    change.add_argument("--lift", action="store_true", help="lift a forced mode (admin)")
    degradation.add_argument("--reason", type=_reason, help="why, for the audit trail (needed with --set)")
    degradation.add_argument("--ttl", type=_ttl, metavar="S", help="lift the forced mode after S seconds")
    return parser


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Rules argparse cannot state; a breach is a usage error (exit 2)."""
    if args.command == "degradation":
        if args.set is not None and args.reason is None:
            parser.error("degradation --set needs --reason")
        if args.ttl is not None and args.set is None:
            parser.error("degradation --ttl goes with --set")
        if args.reason is not None and args.set is None and not args.lift:
            parser.error("degradation --reason goes with --set or --lift")
    if args.command == "config" and args.reason is not None and not args.set:
        parser.error("config --reason goes with --set")
    changes = {"config": "--set", "degradation": "--set or --lift"}
    reading = args.command in changes and not args.set and not getattr(args, "lift", False)
    if reading and (args.retries is not None or args.idempotency_key is not None):
        parser.error(f"{args.command} --retries and --idempotency-key go with {changes[args.command]}")
