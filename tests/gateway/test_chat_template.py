"""The gateway renders a chat template exactly as `transformers` does (same text for the same
messages and tools), on a Hermes-style template with tools, tool calls and tool results."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from executor_svc.byte_tokenizer import build_byte_tokenizer
from gateway.chat_template import ChatTemplateError, gateway_template

# A template in the style of the Hermes/Qwen ones: tools in the system turn, calls as
# <tool_call> JSON, tool results grouped in a user turn, loop controls, raise_exception.
HERMES_STYLE = """
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- 'Tools:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' %}{% continue %}{% endif %}
{%- if message.role not in ['user', 'assistant', 'tool'] %}{{ raise_exception('bad role ' + message.role) }}{% endif %}
{%- if message.role == 'assistant' %}
{{- '<|im_start|>assistant\\n' + (message.content or '') }}
{%- for call in message.tool_calls or [] %}
{{- '\\n<tool_call>\\n{"name": "' + call.function.name + '", "arguments": ' }}
{{- call.function.arguments if call.function.arguments is string else call.function.arguments | tojson }}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look up a café's city",
            "parameters": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    }
]
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is Café Flore?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"name": "Flore"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "Paris"},
    {"role": "tool", "tool_call_id": "call_2", "content": "6th arrondissement"},
]


def test_the_rendering_equals_transformers_apply_chat_template() -> None:
    reference = PreTrainedTokenizerFast(tokenizer_object=build_byte_tokenizer())
    reference.chat_template = HERMES_STYLE
    expected = reference.apply_chat_template(
        MESSAGES, tools=TOOLS, add_generation_prompt=True, tokenize=False
    )
    assert gateway_template(HERMES_STYLE).render(MESSAGES, TOOLS) == expected
    assert "Café" in expected  # tojson keeps non-ASCII text, as transformers' filter does


def test_a_template_that_refuses_a_conversation_raises_template_error() -> None:
    with pytest.raises(ChatTemplateError, match="bad role wizard"):
        gateway_template(HERMES_STYLE).render([{"role": "wizard", "content": "hi"}])


def test_the_sandbox_refuses_to_reach_python_internals() -> None:
    template = gateway_template("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ChatTemplateError):
        template.render([{"role": "user", "content": "hi"}])
