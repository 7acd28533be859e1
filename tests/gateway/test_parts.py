"""The gateway's pure parts, without processes: interceptions as OpenAI tool calls, the marker holdback, the
ChatML fallback and token-id splicing, the pause table, a turn over played server events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from executor_svc.byte_tokenizer import build_byte_tokenizer
from gateway.chat_template import gateway_template
from gateway.errors import GatewayError
from gateway.holdback import releasable_length
from gateway.main import parse_args
from gateway.model_assets import ModelAssets
from gateway.openai_schema import ScriptEntry
from gateway.pauses import PauseTable
from gateway.tool_calls import from_interception
from gateway.turns import GenerationSettings, TextPiece, Turn, TurnEnd, TurnRunner, TurnSpec
from infercept.errors import InferceptError, StatusError
from infercept.events import Finished, Intercepted, TokenDelta, Usage
from infercept.types import RequestSpec, SamplingParams, ScriptedCall
from scheduler_svc.admission import RequestError


def test_an_interception_becomes_an_openai_tool_call_with_the_schedulers_name_and_arguments() -> None:
    event = Intercepted("calc", '{"name": "calc"}', 9, 0, "swap", arguments='{"expression": "12*34"}')
    call = from_interception(event)
    assert call.name == "calc" and call.id.startswith("call_")
    assert json.loads(call.arguments_json) == {"expression": "12*34"}
    scripted = from_interception(Intercepted("search", "any text", 9, 0, "preserve"))
    assert (scripted.name, scripted.arguments_json) == ("search", "{}")


def test_the_holdback_withholds_a_marker_and_any_tail_that_may_become_one() -> None:
    assert releasable_length("Hello <tool", ("<tool_call>",)) == len("Hello ")
    assert releasable_length("Hi <tool_call>{", ("<tool_call>",)) == len("Hi ")
    assert releasable_length("Hello world", ("<tool_call>", "STOP")) == len("Hello world")


def assets() -> ModelAssets:
    return ModelAssets("tiny", 1024, (257,), build_byte_tokenizer(), gateway_template(""))


def test_the_fallback_renders_a_call_right_after_the_content_so_the_generated_text_is_a_prefix() -> None:
    a = assets()
    tools: list[Any] = [{"type": "function", "function": {"name": "calc"}}]
    prompt = a.template.render([{"role": "user", "content": "12*34?"}], tools)
    generated = 'Let me see<tool_call>{"name": "calc", "arguments": {"x": 1}}</tool_call>'
    call = {"function": {"name": "calc", "arguments": '{"x": 1}'}}
    follow_up = a.template.render(
        [
            {"role": "user", "content": "12*34?"},
            {"role": "assistant", "content": "Let me see", "tool_calls": [call]},
            {"role": "tool", "content": "408"},
        ],
        tools,
    )
    assert follow_up.startswith(prompt + generated)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_an_assistant_messages_token_ids_stand_for_its_content() -> None:
    a = assets()
    own_ids = [200, 13, 255]  # bytes that are no valid UTF-8 text
    with_ids = a.encode_conversation(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "?", "token_ids": own_ids}], None
    )
    as_text = a.encode_conversation(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "@"}], None
    )
    at = as_text.index(ord("@"))
    assert with_ids == [*as_text[:at], *own_ids, *as_text[at + 1 :]]


class _Session:
    def __init__(self, context: list[int]) -> None:
        self.context_token_ids = context
        self.on_end = None
        self.is_closed = False

    def close(self) -> None:
        self.is_closed = True


def test_the_pause_table_gives_the_longest_context_the_prompt_extends_under_the_same_settings() -> None:
    clock = [0.0]
    table = PauseTable(10.0, clock=lambda: clock[0])
    short, long, other = _Session([1, 2]), _Session([1, 2, 3]), _Session([1, 2, 3, 4])
    table.add(short, "a")  # type: ignore[arg-type]
    table.add(long, "a")  # type: ignore[arg-type]
    table.add(other, "b")  # type: ignore[arg-type]
    assert table.take([1, 2, 3], "a") is not None  # extends only `short` strictly
    assert table.take([9, 9, 9], "a") is None
    taken = table.take([1, 2, 3, 4, 5], "a")
    assert taken is not None and taken.session is long
    clock[0] = 10.0
    assert table.release_expired() == 1 and other.is_closed and len(table) == 0


class _ScriptedSession:
    """Stands for a GrpcSession: plays fixed server events, keeps the context as the real one."""

    def __init__(self, prompt: list[int], events: list[Any]) -> None:
        self.context_token_ids = list(prompt)
        self._events = events
        self.on_end = None
        self.is_closed = False

    async def turn_events(self) -> Any:
        for event in self._events:
            if isinstance(event, TokenDelta):
                self.context_token_ids.extend(event.token_ids)
            yield event

    def close(self) -> None:
        self.is_closed = True


async def test_a_model_written_call_ends_the_turn_keeps_the_request_paused_and_never_shows_its_markup() -> (
    None
):
    settings = GenerationSettings(0.0, 1.0, None, (), False, "auto", ())
    pauses = PauseTable(60.0)
    runner = TurnRunner(None, assets(), pauses, is_resume_enabled=True, event_timeout_s=5.0)  # type: ignore[arg-type]
    texts = [
        "Let me",
        " compute <tool",
        '_call>{"name": "calc", "arguments": {"x": "12*34"}}',
        "</tool_call>",
    ]
    events: list[Any] = [TokenDelta((i,), text) for i, text in enumerate(texts)]
    call_text = '{"name": "calc", "arguments": {"x": "12*34"}}'
    events.append(Intercepted("calc", call_text, 3 + len(texts), 0, "preserve", '{"x": "12*34"}'))
    session = _ScriptedSession([7, 8, 9], events)
    turn = Turn(runner, session, TurnSpec((7, 8, 9), settings, 64), 0)  # type: ignore[arg-type]
    pieces = [piece async for piece in turn.pieces()]
    shown = "".join(piece.text for piece in pieces if isinstance(piece, TextPiece))
    end = pieces[-1]
    assert isinstance(end, TurnEnd) and end.finish_reason == "tool_calls"
    assert shown == end.content == "Let me compute "
    assert end.tool_call is not None and end.tool_call.name == "calc"
    assert json.loads(end.tool_call.arguments_json) == {"x": "12*34"}
    assert len(pauses) == 1 and not session.is_closed


async def test_a_malformed_call_is_text_and_the_turn_ends_with_it_keeping_no_pause() -> None:
    settings = GenerationSettings(0.0, 1.0, None, (), False, "auto", ())
    pauses = PauseTable(60.0)
    runner = TurnRunner(None, assets(), pauses, is_resume_enabled=True, event_timeout_s=5.0)  # type: ignore[arg-type]
    events: list[Any] = [TokenDelta((1,), "<tool_call>not json</tool_call>")]
    # The scheduler's detector does not intercept a malformed call: generation runs to its end.
    events.append(Finished("eos", Usage(1, 1, 0)))
    session = _ScriptedSession([5], events)
    turn = Turn(runner, session, TurnSpec((5,), settings, 64), 0)  # type: ignore[arg-type]
    pieces = [piece async for piece in turn.pieces()]
    end = pieces[-1]
    assert isinstance(end, TurnEnd) and end.finish_reason == "stop" and end.tool_call is None
    assert end.content == "<tool_call>not json</tool_call>"
    assert "".join(p.text for p in pieces if isinstance(p, TextPiece)) == end.content
    assert len(pauses) == 0


@pytest.mark.parametrize(("tool_mode", "num_schemas"), [("auto", 1), ("none", 0)])
def test_a_fresh_turns_request_is_the_client_librarys_with_the_bodys_tool_schemas(
    tool_mode: str, num_schemas: int
) -> None:
    schema = json.dumps({"type": "function", "function": {"name": "calc", "parameters": {}}})
    script = (ScriptEntry(after_tokens=8, tool="lookup", expected_duration_s=2.5),)
    settings = GenerationSettings(0.5, 0.9, 7, ("END",), True, tool_mode, script, (schema,))  # type: ignore[arg-type]
    runner = TurnRunner(None, assets(), PauseTable(60.0), is_resume_enabled=True, event_timeout_s=5.0)  # type: ignore[arg-type]
    request = runner._request(TurnSpec((7, 8, 9), settings, 16))
    sampling = SamplingParams(runner.assets.max_model_len, 0.5, 0.9, seed=7, stop=("END",), ignore_eos=True)
    expected = RequestSpec(
        prompt_token_ids=(7, 8, 9), sampling=sampling, script=[ScriptedCall(8, "lookup", wait_s=2.5)]
    ).to_proto()
    expected.tool_schemas_json.extend([schema][:num_schemas])
    assert request == expected
    # A turn that may pause takes the model's length; each turn's max_tokens is the gateway's.
    assert (request.sampling.max_tokens, request.script[0].expected_duration_s) == (
        runner.assets.max_model_len,
        2.5,
    )


@pytest.mark.parametrize(
    ("code", "status", "error_code"),
    [
        ("INVALID_ARGUMENT", 400, "invalid_argument"),
        ("OUT_OF_RANGE", 400, "context_length_exceeded"),
        ("RESOURCE_EXHAUSTED", 429, "resource_exhausted"),
        ("UNAVAILABLE", 503, "unavailable"),
        ("DEADLINE_EXCEEDED", 504, "deadline_exceeded"),
        ("INTERNAL", 500, "internal"),
    ],
)
def test_scheduler_errors_become_http_statuses_in_openais_shape(
    code: str, status: int, error_code: str
) -> None:
    error = GatewayError.from_infercept(InferceptError(code, "what happened"))
    assert error.status == status
    assert error.body() == {
        "error": {"message": "what happened", "type": error.type, "param": None, "code": error_code}
    }


def test_a_scheduler_refusal_and_the_clients_error_for_it_are_one_http_error() -> None:
    refusal = RequestError("OUT_OF_RANGE", "the prompt is too long", retry_after_s=None)
    received = InferceptError(refusal.code, refusal.message)  # what the client raises for it
    assert isinstance(refusal, StatusError) and isinstance(received, StatusError)
    assert str(refusal) == str(received) == "OUT_OF_RANGE: the prompt is too long"
    from_refusal, from_received = GatewayError.from_infercept(refusal), GatewayError.from_infercept(received)
    assert (from_refusal.status, from_refusal.body()) == (from_received.status, from_received.body())
    assert from_refusal.body()["error"]["code"] == "context_length_exceeded"


def test_the_command_line_picks_the_models_template_the_builtin_one_or_a_file(tmp_path: Path) -> None:
    assert parse_args([]).config.chat_template is None
    assert parse_args(["--chat-template", "builtin"]).config.chat_template == ""
    (tmp_path / "t.jinja").write_text("{{ messages[0].content }}")
    command = parse_args(
        ["--chat-template", str(tmp_path / "t.jinja"), "--listen", "0.0.0.0:9000", "--no-resume"]
    )
    assert command.config.chat_template == "{{ messages[0].content }}"
    assert (command.host, command.port, command.config.is_resume_enabled) == ("0.0.0.0", 9000, False)


def test_the_command_line_reads_the_schedulers_token_and_ca_and_the_models_template(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("# the gateway's\ngateway s3cret\n")
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    command = parse_args(
        [
            "--token-file",
            str(tmp_path / "tokens"),
            "--ca",
            str(tmp_path / "ca.pem"),
            "--chat-template",
            "model",
        ]
    )
    assert command.config.scheduler_token == "s3cret"
    assert command.config.scheduler_root_certificates == b"-----BEGIN CERTIFICATE-----\n"
    assert command.config.chat_template is None
    assert "s3cret" not in repr(command.config)
