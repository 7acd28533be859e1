"""The request bodies the gateway accepts (OpenAI's Chat Completions and Completions), validated.

Unknown fields are ignored, as OpenAI's own server ignores fields it does not use. The extension
`infercept` (openai's `extra_body={"infercept": {...}}`) is for benchmarks and tests:

    "infercept": {"script": [{"after_tokens": 8, "tool": "lookup"}, ...],   # synthetic tool calls
                  "ignore_eos": false,         # keep generating past end-of-sequence
                  "return_token_ids": false}   # the assistant message carries its token ids

A script entry makes the turn end in a call of `tool` after exactly `after_tokens` generated
tokens (the scheduler's ScriptedCall); the entries after the first describe the turns that follow
when the conversation is continued, so a follow-up repeats the rest of the script. An assistant
message may carry `"infercept": {"token_ids": [...]}` (as returned): those ids stand for its
content in the prompt.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import GatewayError, bad_request


class ScriptEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    after_tokens: int = Field(ge=1)
    tool: str = Field(min_length=1)
    expected_duration_s: float = Field(default=0.0, ge=0)


class Extension(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    script: tuple[ScriptEntry, ...] = ()
    ignore_eos: bool = False
    return_token_ids: bool = False


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    infercept: Extension = Extension()

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    @property
    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def turn_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[int]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, prompt: str | list[int]) -> str | list[int]:
        if not prompt:
            raise ValueError("the prompt is empty")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("echo is not supported")
        return echo


_Model = TypeVar("_Model", bound=BaseModel)


def parse(model: type[_Model], body: Any) -> _Model:
    """`body` (parsed JSON) validated as `model`; raises a 400 GatewayError naming the field."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise bad_request(f"{param}: {first['msg']}" if param else first["msg"], param=param) from error


ToolMode = Literal["none", "auto"]


def tool_mode(request: ChatCompletionRequest) -> ToolMode:
    """Whether the model's own tool calls end the turn ("auto") or not ("none"). Raises 400 for
    tool_choice values the gateway cannot honour: it cannot force the model to call a tool."""
    choice = request.tool_choice
    if not request.tools:
        if choice not in (None, "none", "auto"):
            raise bad_request("tool_choice needs tools", param="tool_choice")
        return "none"
    if choice is None or choice == "auto":
        return "auto"
    if choice == "none":
        return "none"
    raise GatewayError(
        400,
        "tool_choice 'required' or a named function is not supported: the gateway cannot force the "
        "model to call a tool; use 'auto' or 'none'",
        param="tool_choice",
        code="unsupported_value",
    )


def check_tools(tools: list[dict[str, Any]] | None) -> None:
    """Raise 400 unless every tool is {"type": "function", "function": {"name": ..., ...}}."""
    for index, tool in enumerate(tools or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
            raise bad_request(
                "each tool must be {'type': 'function', 'function': {'name': ...}}", param=f"tools.{index}"
            )


_ROLES = ("system", "developer", "user", "assistant", "tool")


def normalized_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the chat template expects them: content as one string (text parts
    joined), an assistant's `infercept.token_ids` as `token_ids`. Raises 400 for an unknown role
    or content that is not text."""
    normalized = []
    for index, message in enumerate(messages):
        if message.get("role") not in _ROLES:
            raise bad_request(f"role must be one of {', '.join(_ROLES)}", param=f"messages.{index}.role")
        message = {key: value for key, value in message.items() if key != "infercept"}
        message["content"] = _text_content(message.get("content"), f"messages.{index}.content")
        extension = messages[index].get("infercept")
        if message["role"] == "assistant" and isinstance(extension, dict) and "token_ids" in extension:
            token_ids = extension["token_ids"]
            if not isinstance(token_ids, list) or not all(isinstance(i, int) and i >= 0 for i in token_ids):
                raise bad_request(
                    "token_ids must be a list of token ids", param=f"messages.{index}.infercept"
                )
            message["token_ids"] = token_ids
        normalized.append(message)
    return normalized


def _text_content(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad_request("only text content parts are supported", param=param)
            parts.append(part["text"])
        return "".join(parts)
    raise bad_request("content must be a string or a list of text parts", param=param)
