"""Rendering conversations with the model's chat template, as ``transformers`` renders them.

A chat template is Jinja source shipped with the model (``tokenizer_config.json``; the executor
sends it in Describe). It is untrusted text, so it runs in jinja2's ImmutableSandboxedEnvironment
with the same options, filters and globals as ``transformers``' ``apply_chat_template``
(``trim_blocks``, ``lstrip_blocks``, loop controls, ``tojson`` that keeps non-ASCII,
``raise_exception``, ``strftime_now``), and sees the same variables: ``messages``, ``tools``,
``add_generation_prompt`` and the special tokens (``bos_token``, ``eos_token``, ...).

A tool's result is appended to a paused request as the template's tool turn: the text the
template writes between the end of the assistant's (interrupted) message and the start of the
next assistant message, e.g. for ChatML
``<|im_end|>\\n<|im_start|>tool\\n408<|im_end|>\\n<|im_start|>assistant\\n``. It is found by
rendering the conversation with a placeholder for the assistant's text and cutting after it, so
any template that writes the assistant's content verbatim works.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = dict[str, Any]  # {"role": ..., "content": ..., optional "tool_calls", "tool_call_id", "name"}

# Stands for the assistant's generated text when the tool turn is rendered; never in real text.
_PLACEHOLDER = "\x00infercept-assistant-text\x00"


class ChatTemplateError(ValueError):
    """The template does not compile or fails on these messages; the message says why."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters and forces ASCII; templates expect plain JSON.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.lru_cache(maxsize=8)
def _compile(source: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(source)
    except jinja2.exceptions.TemplateError as error:
        raise ChatTemplateError(f"the model's chat template does not compile: {error}") from error


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A model's chat template and the special tokens it may refer to."""

    source: str
    special_tokens: Mapping[str, str] = dataclasses.field(default_factory=dict)  # e.g. bos_token -> "<s>"

    def render(
        self,
        messages: Sequence[Message],
        tools: Sequence[Mapping[str, Any]] = (),
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text of `messages` (tools: JSON schemas, None to the template when empty).
        Raises ChatTemplateError when the template refuses them (raise_exception) or fails."""
        template = _compile(self.source)
        try:
            return template.render(
                messages=list(messages),
                tools=list(tools) or None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.exceptions.TemplateError as error:
            raise ChatTemplateError(f"the chat template refused the messages: {error}") from error
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise ChatTemplateError(f"the chat template failed on the messages: {error}") from error

    def tool_turn(
        self, messages: Sequence[Message], tool_result: str, tools: Sequence[Mapping[str, Any]] = ()
    ) -> str:
        """The text that follows an assistant's message cut short by a tool call in `messages`
        (the conversation so far): the end of that message, the tool's message with
        `tool_result`, and the start of the next assistant message."""
        with_placeholder = [*messages, {"role": "assistant", "content": _PLACEHOLDER}]
        rendered = self.render([*with_placeholder, {"role": "tool", "content": tool_result}], tools, True)
        position = rendered.rfind(_PLACEHOLDER)
        if position < 0:
            raise ChatTemplateError(
                "the chat template does not write an assistant message's content verbatim"
            )
        return rendered[position + len(_PLACEHOLDER) :]


@dataclasses.dataclass
class Conversation:
    """The chat a request was rendered from, extended by each tool turn (what later tool turns
    are rendered after)."""

    template: ChatTemplate
    messages: list[Message]
    tools: list[dict[str, Any]]

    def prompt(self) -> str:
        return self.template.render(self.messages, self.tools, add_generation_prompt=True)

    def append_tool_turn(self, assistant_text: str, tool_result: str) -> str:
        """The tool turn's text (see ChatTemplate.tool_turn) after the assistant wrote
        `assistant_text` since its message began; the conversation then holds both messages."""
        text = self.template.tool_turn(self.messages, tool_result, self.tools)
        self.messages += [
            {"role": "assistant", "content": assistant_text},
            {"role": "tool", "content": tool_result},
        ]
        return text
