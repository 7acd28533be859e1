"""gRPC channel settings shared by Client and AsyncClient (and the scheduler's executor client):
options, TLS and the bearer token."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

from infercept.auth import BearerToken, aio_token_interceptors

# The one limit on a public-API message, both ways (client and scheduler). gRPC buffers a whole
# message before any handler sees it, so this bounds the memory one stream can pin. The largest
# legitimate message is a prompt at the maximum model length: as token ids at most 5 bytes each
# (varints), as text a few bytes per token (the scheduler refuses text longer than
# max_model_len x PROMPT_BYTES_PER_TOKEN_BOUND before tokenizing it); 131072 tokens is at most
# ~4 MiB either way, so 8 MiB leaves headroom over gRPC's 4 MiB default and nothing more.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

DEFAULT_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """The default options, overridden by `extra` where the names collide."""
    names = {name for name, _ in extra}
    return [option for option in DEFAULT_CHANNEL_OPTIONS if option[0] not in names] + list(extra)


def open_channel(
    address: str,
    options: Sequence[tuple[str, Any]],
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> grpc.Channel:
    """A blocking channel to `address`: TLS with `credentials` (else plaintext), and the bearer
    `token` on every call when given."""
    if credentials is None:
        channel = grpc.insecure_channel(address, options=list(options))
    else:
        channel = grpc.secure_channel(address, credentials, options=list(options))
    return channel if token is None else grpc.intercept_channel(channel, BearerToken(token))


def open_aio_channel(
    address: str,
    options: Sequence[tuple[str, Any]],
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `address`, as open_channel; create it inside the running loop."""
    interceptors = aio_token_interceptors(token)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=list(options), interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, options=list(options), interceptors=interceptors)
