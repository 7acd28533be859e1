"""The gateway's chat template: the scheduler's renderer (scheduler_svc.chat_template, one
implementation for both services) with the model's template, or CHATML_FALLBACK.

A model without a template (the random `tiny` model), or a gateway started with
`--chat-template builtin`, gets CHATML_FALLBACK: ChatML turns (`<|im_start|>role\\ncontent<|im_end|>\\n`),
the tools' JSON schemas in a system turn that asks for Hermes `<tool_call>{...}</tool_call>` calls,
an assistant's tool calls rendered in that same form right after its content (so the text the
model generated is a prefix of the follow-up's rendering), and `<|im_start|>assistant\\n` as the
generation prompt.
"""

from __future__ import annotations

from scheduler_svc.chat_template import ChatTemplate, ChatTemplateError

__all__ = ["CHATML_FALLBACK", "ChatTemplate", "ChatTemplateError", "gateway_template"]

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


def gateway_template(source: str, *, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """The template the gateway renders with: `source`, or CHATML_FALLBACK when it is ""."""
    return ChatTemplate(source or CHATML_FALLBACK, {"bos_token": bos_token, "eos_token": eos_token})
