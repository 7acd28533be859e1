"""Public request ids: unguessable strings handed to clients, mapped to the core's ints at the edge.

The core numbers requests 1, 2, 3, ...; a client sees only a random id (128 bits,
`secrets.token_urlsafe`), returned in its own session's Accepted and nowhere else (logs carry the
internal number). A request is reachable through its public id only by its owner, the caller
identity that created it (the token's name; everyone is the same anonymous caller when
authentication is off, and then the unguessable id alone is the capability).
"""

from __future__ import annotations

import dataclasses
import secrets

from scheduler_svc.admission import RequestError

PUBLIC_ID_BYTES = 16  # 128 random bits: 22 URL-safe characters
MAX_PUBLIC_ID_CHARS = 64  # longer strings are not ids: refused without a lookup


@dataclasses.dataclass(frozen=True)
class _Entry:
    request_id: int  # the core's id
    owner: str  # the caller identity that created the request


class PublicIds:
    """Public id <-> internal id for live sessions, with each request's owner."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def add(self, request_id: int, owner: str) -> str:
        """A fresh public id for the core's `request_id`, owned by `owner`."""
        public_id = secrets.token_urlsafe(PUBLIC_ID_BYTES)
        while public_id in self._entries:  # never in practice; keeps ids unique by construction
            public_id = secrets.token_urlsafe(PUBLIC_ID_BYTES)
        self._entries[public_id] = _Entry(request_id, owner)
        return public_id

    def remove(self, public_id: str) -> None:
        self._entries.pop(public_id, None)

    def resolve(self, public_id: str, caller: str) -> int:
        """The core's id of `public_id` if `caller` owns it. RequestError NOT_FOUND for an unknown
        id, PERMISSION_DENIED for another caller's request."""
        entry = self._entries.get(public_id) if len(public_id) <= MAX_PUBLIC_ID_CHARS else None
        if entry is None:
            raise RequestError("NOT_FOUND", f"no live request {public_id[:MAX_PUBLIC_ID_CHARS]!r}")
        if entry.owner != caller:
            raise RequestError("PERMISSION_DENIED", "the request belongs to another caller")
        return entry.request_id

    def __len__(self) -> int:
        return len(self._entries)
