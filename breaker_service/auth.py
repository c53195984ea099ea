"""Bearer tokens and roles (DESIGN.md, "Identity, auth, logs").

- admin routes are never open; an admin token may do all a client token may;
- while `BREAKER_CLIENT_TOKENS` is unset, client and reader routes are open, but a presented unknown token is
  still refused;
- a token is compared with every configured token in constant time, without stopping at the first match, so
  timing does not tell which one matched. The matching token's name is the actor in audit entries.
"""

from __future__ import annotations

import enum
import hmac
from typing import TYPE_CHECKING

from breaker_service.errors import ForbiddenError, UnauthenticatedError

if TYPE_CHECKING:
    from collections.abc import Mapping


class Role(enum.IntEnum):
    """What a route needs; a higher role includes the lower ones."""

    CLIENT = 1
    ADMIN = 2


class Authenticator:
    """Decides who a request is and whether it may use a route."""

    def __init__(self, *, admin_tokens: Mapping[str, str], client_tokens: Mapping[str, str] | None) -> None:
        self._open = client_tokens is None
        self._tokens = [(name, token.encode(), Role.ADMIN) for name, token in admin_tokens.items()]
        self._tokens += [(name, token.encode(), Role.CLIENT) for name, token in (client_tokens or {}).items()]

    def authorize(self, authorization: str | None, needed: Role) -> str | None:
        """The actor's name (None for an anonymous request on an open route); raises 401/403 errors."""
        if authorization is None:
            if needed is Role.CLIENT and self._open:
                return None
            raise UnauthenticatedError("this route needs an Authorization: Bearer token")
        name, role = self._identify(authorization)
        if role < needed:
            raise ForbiddenError(f"the token {name!r} does not carry the {needed.name.lower()} role")
        return name

    def _identify(self, authorization: str) -> tuple[str, Role]:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("malformed Authorization header: expected 'Bearer <token>'")
        presented = token.encode()
        found: tuple[str, Role] | None = None
        for name, secret, role in self._tokens:
            if hmac.compare_digest(secret, presented) and found is None:
                found = (name, role)
        if found is None:
            raise UnauthenticatedError("unknown token")
        return found
