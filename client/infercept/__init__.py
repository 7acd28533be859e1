"""InferCept client library: the public API over gRPC, with nothing but grpcio and protobuf.

    from infercept import Client, SamplingParams, ScriptedCall

    with Client("127.0.0.1:50051") as client:
        result = client.generate(
            prompt_token_ids=[1, 2, 3],
            sampling=SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True),
            script=[ScriptedCall(after_tokens=17, tool="qa", wait_s=0.2, returned_token_ids=[5, 9, 2])],
        )

Modules, one concept each:
    types         ClientConfig, RequestSpec, SamplingParams, ScriptedCall: what a caller gives the
                  client, each declared once (both clients take their fields as keywords)
    tools         Tool: a tool the model calls, its trigger and its function
    events        the typed server events a stream yields (Accepted ... Finished), Usage
    result        GenerateResult and Interception: what a finished request returns
    server_info   ServerInfo, and protobuf messages as dicts (server_stats)
    errors        StatusError (code, message), InferceptError and the translation of gRPC statuses
    session       the Session protocol without I/O, shared by both clients
    sync_client   Client and its Stream (blocking)
    async_client  AsyncClient and its AsyncStream (asyncio, grpc.aio)
    resume        ResumePolicy: resubmitting what a client holds after the server restarted
    channel       gRPC channel options, TLS and the bearer token on a channel
    auth, tls     token files and the token interceptors; the client's TLS credentials

The generated gRPC stubs live under ``infercept.v1``: generated from ../proto when the package is
built (client/setup.py), or by ``make proto`` in a checkout.
"""

from __future__ import annotations

from infercept.async_client import AsyncClient, AsyncStream
from infercept.errors import InferceptError, StatusError
from infercept.events import Accepted, Event, Finished, Intercepted, Resumed, TokenDelta, Usage
from infercept.result import GenerateResult, Interception
from infercept.resume import NO_RESUME, ResumePolicy
from infercept.server_info import ServerInfo
from infercept.sync_client import Client, Stream
from infercept.tools import Tool, ToolOutput
from infercept.types import ClientConfig, RequestSpec, SamplingParams, ScriptedCall

__version__ = "0.1.0"

__all__ = [
    "NO_RESUME",
    "Accepted",
    "AsyncClient",
    "AsyncStream",
    "Client",
    "ClientConfig",
    "Event",
    "Finished",
    "GenerateResult",
    "InferceptError",
    "Intercepted",
    "Interception",
    "RequestSpec",
    "ResumePolicy",
    "Resumed",
    "SamplingParams",
    "ScriptedCall",
    "ServerInfo",
    "StatusError",
    "Stream",
    "TokenDelta",
    "Tool",
    "ToolOutput",
    "Usage",
    "__version__",
]
