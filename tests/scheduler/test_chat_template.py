"""Chat templates rendered in a sandbox as transformers renders them, and the tool turn a tool's
result is appended as."""

from __future__ import annotations

import pytest

from scheduler_svc.chat_template import ChatTemplate, ChatTemplateError, Conversation

# SmolLM2's (ChatML) template, as its GGUF ships it.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A Qwen2.5-style template (abridged): tools listed in the system turn as JSON, tool results
# wrapped in <tool_response> inside a user turn, consecutive results sharing it.
QWEN_LIKE = """{%- if tools %}<|im_start|>system
# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "tool" %}
{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != "tool" %}<|im_start|>user{% endif %}
{{ '\n' }}<tool_response>
{{ message.content }}
</tool_response>
{%- if loop.last or messages[loop.index0 + 1].role != "tool" %}<|im_end|>
{% endif %}
{%- else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

TOOL = {"type": "function", "function": {"name": "calc", "description": "Évalue", "parameters": {}}}


def test_chatml_renders_the_default_system_turn_and_the_generation_prompt() -> None:
    text = ChatTemplate(CHATML).render([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        not ChatTemplate(CHATML)
        .render([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
        .endswith("assistant\n")
    )


def test_the_tool_turn_of_chatml_closes_the_assistant_and_opens_the_next() -> None:
    turn = ChatTemplate(CHATML).tool_turn([{"role": "user", "content": "12*34?"}], "408")
    assert turn == "<|im_end|>\n<|im_start|>tool\n408<|im_end|>\n<|im_start|>assistant\n"


def test_tools_reach_the_template_as_json_that_keeps_non_ascii() -> None:
    text = ChatTemplate(QWEN_LIKE).render([{"role": "user", "content": "Hi"}], tools=[TOOL])
    assert '{"type": "function", "function": {"name": "calc", "description": "Évalue"' in text
    assert "<tools>" not in ChatTemplate(QWEN_LIKE).render([{"role": "user", "content": "Hi"}])


def test_a_conversation_renders_each_tool_turn_after_the_previous_ones() -> None:
    chat = Conversation(ChatTemplate(QWEN_LIKE), [{"role": "user", "content": "Go"}], [TOOL])
    first = chat.append_tool_turn('<tool_call>{"name": "calc"}</tool_call>', "1")
    second = chat.append_tool_turn("again", "2")
    expected = "<|im_end|>\n<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    assert (first, second) == (expected.format(1), expected.format(2))
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "tool", "assistant", "tool"]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ messages.__class__.__mro__ }}", "refused"),  # the sandbox forbids private attributes
        ("{{ raise_exception('no system role') }}", "no system role"),
        ("{% for %}", "does not compile"),
        ("{{ messages[0]['content'] + 1 }}", "failed"),
    ],
)
def test_a_template_that_fails_raises_a_typed_error(source: str, reason: str) -> None:
    with pytest.raises(ChatTemplateError, match=reason):
        ChatTemplate(source).render([{"role": "user", "content": "Hi"}])


def test_a_template_that_hides_the_assistants_text_has_no_tool_turn() -> None:
    hiding = "{% for m in messages %}{{ m.role }}{% endfor %}"
    with pytest.raises(ChatTemplateError, match="verbatim"):
        ChatTemplate(hiding).tool_turn([{"role": "user", "content": "Hi"}], "1")
