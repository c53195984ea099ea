"""`breakerctl`'s v1.1 admin commands: `delete`, `config` and `degradation`.

Each takes the CLI's `Service` and the parsed arguments; the service's errors and transport failures propagate to
`_cli._execute`, which turns them into exit codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import msgspec

from breaker_client import _cli_render as render
from breaker_client.protocol.models import JSON_ENCODER, Snapshot

if TYPE_CHECKING:
    import argparse

    from breaker_client._cli_service import Service

__all__ = ["config", "degradation", "delete"]

_SNAPSHOT: Final = msgspec.json.Decoder(Snapshot)
_OBJECT: Final = msgspec.json.Decoder(dict[str, Any])


def _path(name: str) -> str:
    return f"/breakers/{quote(name, safe='')}"


def _reason(args: argparse.Namespace) -> dict[str, str]:
    return {} if args.reason is None else {"reason": args.reason}


def _print(args: argparse.Namespace, raw: bytes, human: str) -> None:
    print(raw.decode() if args.json else human)


async def delete(service: Service, args: argparse.Namespace) -> None:
    """`delete NAME [--reason R]`: the service answers 204; --json prints `{"name", "deleted": true}`."""
    await service.send("DELETE", _path(args.name), params=_reason(args))
    raw = JSON_ENCODER.encode({"name": args.name, "deleted": True})
    _print(args, raw, f"deleted {args.name}")


async def config(service: Service, args: argparse.Namespace) -> None:
    """`config NAME`: the breaker's config; with `--set k=v ...`, merge those fields in (PATCH) and show the result."""
    if args.set:
        fields = dict(args.set)
        raw = await service.send("PATCH", _path(args.name), body=fields, params=_reason(args))
    else:
        raw = await service.send("GET", _path(args.name))
    snapshot = _SNAPSHOT.decode(raw)
    if args.json:
        print(JSON_ENCODER.encode(snapshot.config).decode())
        return
    settings = msgspec.structs.asdict(snapshot.config)
    width = max(len(key) for key in settings)
    print("\n".join(f"{key:<{width}}  {_value(value)}" for key, value in settings.items()))


def _value(value: object) -> str:
    if value is None:
        return render.NONE
    if isinstance(value, float):
        return f"{value:g}"
    return JSON_ENCODER.encode(value).decode() if not isinstance(value, str | int) else str(value)


async def degradation(service: Service, args: argparse.Namespace) -> None:
    """`degradation`: the fleet's mode; `--set MODE --reason R [--ttl S]` forces one, `--lift` lifts the force."""
    if args.set is not None:
        body: dict[str, Any] = {"mode": args.set, "reason": args.reason, "ttl_s": args.ttl}
        raw = await service.send("PUT", "/degradation", body=body)
    elif args.lift:
        raw = await service.send("PUT", "/degradation", body={"mode": None, **_reason(args)})
    else:
        raw = await service.send("GET", "/degradation")
    state = _OBJECT.decode(raw)
    forced = " (forced by an admin)" if state.get("forced") else " (derived from dependency health)"
    human = "\n".join(
        [
            f"mode:    {state.get('mode')}{forced}",
            f"reason:  {state.get('reason')}",
            f"since:   {render.timestamp(state.get('since'))}",
        ]
    )
    _print(args, raw, human)
