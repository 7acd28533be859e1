"""The service edge's rendering of the core's domain events as public-API `ServerEvent`s.

The core (`events.py`) never builds protobuf; a session renders each event it sends here, so
the cost of building messages is paid per session, off the core's iteration.
"""

from __future__ import annotations

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.events import Accepted, Finished, Intercepted, Resumed, SessionEvent, TokenDelta


def render(event: SessionEvent) -> gen.ServerEvent:
    """The ServerEvent a session sends for `event` (its request id is the core's; the servicer
    replaces Accepted's by the public id)."""
    message = gen.ServerEvent()  # filled in place: cheaper than nested constructors
    match event:
        case TokenDelta():
            message.tokens.token_ids.extend(event.token_ids)
            if event.text:
                message.tokens.text = event.text
        case Accepted():
            accepted = message.accepted
            accepted.request_id = str(event.request_id)
            accepted.num_prompt_tokens = event.num_prompt_tokens
            accepted.seed = event.seed
        case Intercepted():
            message.intercepted.CopyFrom(
                gen.Intercepted(
                    tool=event.tool,
                    call_text=event.call_text,
                    num_context_tokens=event.num_context_tokens,
                    index=event.index,
                    context_action=event.context_action.value,
                    arguments=event.arguments,
                )
            )
        case Resumed():
            message.resumed.CopyFrom(
                gen.Resumed(
                    num_returned_tokens=event.num_returned_tokens,
                    num_device_blocks_kept=event.num_device_blocks_kept,
                    num_blocks_swapped_in=event.num_blocks_swapped_in,
                    num_recomputed_tokens=event.num_recomputed_tokens,
                )
            )
        case Finished():
            usage = event.usage
            message.finished.CopyFrom(
                gen.Finished(
                    finish_reason=event.reason.value,
                    usage=gen.Usage(
                        prompt_tokens=usage.prompt_tokens,
                        generated_tokens=usage.generated_tokens,
                        returned_tokens=usage.returned_tokens,
                        recomputed_tokens=usage.recomputed_tokens,
                        interceptions=usage.interceptions,
                    ),
                )
            )
    return message
