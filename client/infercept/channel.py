"""gRPC channel settings shared by Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Long prompts and long outputs travel as single messages; gRPC's 4 MiB default is too small.
DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The default options, overridden by `extra` where the names collide."""
    names = {name for name, _ in extra}
    return [option for option in DEFAULT_CHANNEL_OPTIONS if option[0] not in names] + list(extra)
