"""What the gateway knows of the served model: its name, limits, tokenizer and chat template
(all from the scheduler's GetServerInfo), and how it turns text and conversations into token ids.

Token ids of an assistant turn can travel with the message (extension, see encode_conversation):
models whose output does not survive a round trip through text (the random `tiny` model writes
arbitrary bytes) then still give a follow-up whose prompt extends the paused context exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any

from tokenizers import Tokenizer

from gateway.chat_template import ChatTemplate, gateway_template
from infercept.server_info import ServerInfo

# Private-use characters around a message index: where a message's own token ids go.
_SLOT_OPEN, _SLOT_CLOSE = "\ue000", "\ue001"
_SLOT = re.compile(f"{_SLOT_OPEN}(\\d+){_SLOT_CLOSE}")


@dataclasses.dataclass(frozen=True)
class ModelAssets:
    name: str  # the model name clients use
    max_model_len: int  # tokens
    eos_token_ids: tuple[int, ...]
    tokenizer: Tokenizer
    template: ChatTemplate

    @classmethod
    def from_server_info(
        cls, info: ServerInfo, name: str = "", chat_template: str | None = None
    ) -> ModelAssets:
        """Assets for the scheduler's model; `name` overrides the model's own name and
        `chat_template` its template ("": the built-in ChatML one). Raises ValueError if the
        server sends no tokenizer."""
        if not info.tokenizer_json:
            raise ValueError("the scheduler sends no tokenizer (is it older than the gateway?)")
        tokenizer = Tokenizer.from_str(info.tokenizer_json)
        eos = tokenizer.id_to_token(info.eos_token_ids[0]) if info.eos_token_ids else None
        source = info.chat_template if chat_template is None else chat_template
        template = gateway_template(source, eos_token=eos or "")
        return cls(name or info.model, info.max_model_len, tuple(info.eos_token_ids), tokenizer, template)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, with no special tokens added (a template writes its own)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=False))

    def encode_conversation(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> list[int]:
        """Prompt token ids of a conversation: the chat template's text, tokenized. An assistant
        message that carries `token_ids` (its exact generated tokens) contributes those ids in
        place of its tokenized content and tool calls. Raises ChatTemplateError."""
        slotted: list[dict[str, Any]] = []
        own_ids: dict[int, list[int]] = {}
        for index, message in enumerate(messages):
            if message.get("role") == "assistant" and message.get("token_ids") is not None:
                message = copy.copy(message)
                own_ids[index] = list(message.pop("token_ids"))
                # The ids are the whole turn as generated, a call the model wrote included: the
                # template must not write the call again (nor one a script made, never written).
                message.pop("tool_calls", None)
                message["content"] = f"{_SLOT_OPEN}{index}{_SLOT_CLOSE}"
            slotted.append(message)
        text = self.template.render(slotted, tools or ())
        if not own_ids:
            return self.encode(text)
        token_ids: list[int] = []
        position = 0
        for match in _SLOT.finditer(text):
            token_ids += self.encode(text[position : match.start()]) + own_ids[int(match.group(1))]
            position = match.end()
        return token_ids + self.encode(text[position:])
