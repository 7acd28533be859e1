"""Rendering a conversation (`messages`, `tools`) into prompt text with the model's chat template.

The template is Jinja, rendered as `transformers` renders it: a sandboxed, immutable environment
with trim_blocks and lstrip_blocks, the loop-controls extension, a `tojson` filter that keeps
non-ASCII text, `raise_exception` and `strftime_now`, and the variables `messages`, `tools`,
`add_generation_prompt`, `bos_token`, `eos_token`.

A model without a template (the random `tiny` model) gets CHATML_FALLBACK: ChatML turns
(`<|im_start|>role\\ncontent<|im_end|>\\n`), the tools' JSON schemas in a system turn that asks
for Hermes `<tool_call>{...}</tool_call>` calls, an assistant's tool calls rendered in that same
form right after its content, and `<|im_start|>assistant\\n` as the generation prompt.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

CHATML_FALLBACK = (
    "{%- if tools %}"
    "<|im_start|>system\n"
    "You may call functions. Their signatures, as JSON schemas, within <tools></tools>:\n<tools>\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n"
    'To call one, write <tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>'
    "<|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}"
    "<|im_start|>{{ message.role }}\n{{ message.content or '' }}"
    "{%- for call in message.tool_calls or [] %}"
    '<tool_call>{"name": {{ call.function.name | tojson }}, "arguments": '
    "{{ call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}"
    "}</tool_call>"
    "{%- endfor %}"
    "<|im_end|>\n"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TemplateError(ValueError):
    """The template refused the conversation (raise_exception) or failed to render it."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format_string: str) -> str:
    return datetime.datetime.now().strftime(format_string)


class ChatTemplate:
    """A compiled chat template. `source` "" means CHATML_FALLBACK."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        self.is_fallback = not source
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise_exception
        environment.globals["strftime_now"] = _strftime_now
        try:
            self._template = environment.from_string(source or CHATML_FALLBACK)
        except jinja2.TemplateError as error:
            raise TemplateError(f"the model's chat template does not compile: {error}") from error
        self._special_tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        """The prompt text for `messages` (OpenAI message dicts) and `tools` (OpenAI tool dicts),
        ending with the generation prompt of an assistant turn. Raises TemplateError."""
        try:
            return self._template.render(
                messages=messages, tools=tools or None, add_generation_prompt=True, **self._special_tokens
            )
        except TemplateError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError) as error:
            raise TemplateError(f"the chat template cannot render this conversation: {error}") from error
