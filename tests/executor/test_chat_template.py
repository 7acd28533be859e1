"""The executor reads a model's chat template from tokenizer_config.json (for Describe)."""

from __future__ import annotations

import json
from pathlib import Path

from executor_svc.loading import read_chat_template


def test_the_chat_template_comes_from_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert read_chat_template(tmp_path) == ("{{ messages }}", {})


def test_a_list_of_named_templates_gives_the_default_one(tmp_path: Path) -> None:
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert read_chat_template(tmp_path)[0] == "D"


def test_a_model_without_a_template_has_none(tmp_path: Path) -> None:
    assert read_chat_template(tmp_path) == ("", {})
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    assert read_chat_template(tmp_path) == ("", {"bos_token": "<s>"})
