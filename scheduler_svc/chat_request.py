"""A GenerateRequest's conversation (messages, tool schemas) as the chat template sees it."""

from __future__ import annotations

import json
from typing import Any

from infercept.v1 import generation_pb2 as gen
from scheduler_svc.chat_template import ChatTemplate, Conversation, Message
from scheduler_svc.config import ExecutorDescription


class ChatRequestError(ValueError):
    """The messages or tool schemas are malformed, or the model has no chat template."""


def conversation(proto: gen.GenerateRequest, executor: ExecutorDescription) -> Conversation:
    """The request's conversation, ready to render (ChatRequestError if it cannot be)."""
    if not executor.chat_template:
        raise ChatRequestError("the model has no chat template: send the prompt as text or token ids")
    template = ChatTemplate(executor.chat_template, dict(executor.chat_template_tokens))
    return Conversation(template, [message_dict(m) for m in proto.messages], tool_schemas(proto))


def message_dict(message: gen.ChatMessage) -> Message:
    """A message in the form chat templates expect (transformers' and OpenAI's)."""
    if not message.role:
        raise ChatRequestError("a message has no role")
    result: Message = {"role": message.role, "content": message.content}
    if message.tool_calls:
        result["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                # Templates write the arguments with tojson: an object, not its JSON text.
                "function": {
                    "name": call.name,
                    "arguments": _json_object(call.arguments_json or "{}", "arguments"),
                },
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        result["tool_call_id"] = message.tool_call_id
    if message.name:
        result["name"] = message.name
    return result


def tool_schemas(proto: gen.GenerateRequest) -> list[dict[str, Any]]:
    return [_json_object(schema, "a tool schema") for schema in proto.tool_schemas_json]


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ChatRequestError(f"{what} is not valid JSON: {error}") from error
    if not isinstance(value, dict):
        raise ChatRequestError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
