"""The gateway demo: a model answers questions with real tools through the OpenAI-compatible
gateway, the official `openai` package as the client, and each turn is told as it happens.

    python -m gateway.demo --model default            # SmolLM2 writes its own <tool_call>s
    python -m gateway.demo --model tiny --scripted    # the random tiny model: calls come from a script
    python -m gateway.demo --gateway http://127.0.0.1:8000   # a gateway already running

The tools are plain Python: a calculator, a lookup in a small local corpus, and a clock that
answers after a delay (it stands for a slow external API). SmolLM2-135M is small: the
conversation starts with a system prompt and worked examples (FEW_SHOT) in the gateway's
tool-aware ChatML template (`--chat-template builtin`: the model's own template ignores tools),
each example saying which tool it will use before the call; with them, greedy decoding writes
well-formed calls of the right tool. For every turn it prints the call the model wrote, what the server did with the paused
request's context (kept on the device, swapped to host memory, dropped), the tool's result, and
on the next turn whether the paused context was reused (kept or swapped back in) or recomputed,
or whether the follow-up started afresh. With --scripted, a turn ends in a call after a fixed
number of tokens (the gateway's `infercept` script extension) and the call's arguments come from
the question's plan, since a random model writes none.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import operator
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai

from gateway.background import serve_in_thread
from gateway.config import GatewayConfig

CORPUS = {
    "louvre": "The Louvre is in Paris, France; it is the world's most-visited museum.",
    "kenya": "The capital of Kenya is Nairobi.",
    "everest": "Mount Everest is 8,849 metres high.",
    "python": "Python was first released in 1991 by Guido van Rossum.",
}

_OPERATORS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def calculator(expression: str) -> str:
    """Arithmetic on numbers (+ - * / **), evaluated on the syntax tree, never with eval()."""

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.operand))
        raise ValueError(f"not arithmetic: {ast.dump(node)}")

    try:
        return str(value(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as error:
        return f"error: {error}"


def lookup(topic: str) -> str:
    """The corpus entry whose key occurs in `topic`."""
    for key, text in CORPUS.items():
        if key in topic.lower():
            return text
    return f"nothing about {topic!r} in the corpus"


# The clock's delay: it stands for a slow external API, during which the paused context waits.
CLOCK_DELAY_S = 1.0


def clock(**_ignored: object) -> str:
    """The current time, UTC, after CLOCK_DELAY_S (arguments the model invents are ignored)."""
    time.sleep(CLOCK_DELAY_S)
    return time.strftime("%H:%M UTC", time.gmtime())


TOOL_FUNCTIONS: dict[str, Callable[..., str]] = {
    "calculator": calculator,
    "lookup": lookup,
    "clock": clock,
}

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a topic up in the local encyclopedia",
            "parameters": {
                "type": "object",
                "properties": {"topic": {"type": "string"}},
                "required": ["topic"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "clock",
            "description": "The current time (a slow external service)",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]

SYSTEM_PROMPT = (
    "You are a helpful assistant. Use a tool when a question needs one, then answer in one sentence."
)
# What an example's assistant says before its call: it makes a small model pick the right tool.
_INTENTS = {
    "calculator": "I will use the calculator.",
    "lookup": "I will look it up.",
    "clock": "I will ask the clock.",
}


def worked_example(
    question: str, tool: str, arguments: dict[str, Any], result: str, answer: str
) -> list[Any]:
    """One worked example as OpenAI messages: the question, the call, the tool's result, the answer."""
    call = {"id": f"example_{tool}", "type": "function"}
    call["function"] = {"name": tool, "arguments": json.dumps(arguments)}  # type: ignore[assignment]
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": _INTENTS[tool], "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": result},
        {"role": "assistant", "content": answer},
    ]


# The start of every real-model conversation: the system prompt and five worked examples (the
# last one a calculation: a small model leans to the tool it saw last).
FEW_SHOT: list[Any] = [
    {"role": "system", "content": SYSTEM_PROMPT},
    *worked_example(
        "Where is the Eiffel Tower?",
        "lookup",
        {"topic": "Eiffel Tower"},
        "The Eiffel Tower is in Paris, France.",
        "The Eiffel Tower is in Paris, France.",
    ),
    *worked_example("What is 7*8?", "calculator", {"expression": "7*8"}, "56", "7*8 is 56."),
    *worked_example("What time is it?", "clock", {}, "09:30 UTC", "It is 09:30 UTC."),
    *worked_example(
        "Who wrote Hamlet?",
        "lookup",
        {"topic": "Hamlet"},
        "Hamlet was written by William Shakespeare.",
        "William Shakespeare wrote Hamlet.",
    ),
    *worked_example("What is 100-42?", "calculator", {"expression": "100-42"}, "58", "100-42 is 58."),
]


@dataclasses.dataclass(frozen=True)
class Question:
    text: str
    # For --scripted: the calls a random model is made to write (tool, arguments), in order.
    plan: tuple[tuple[str, dict[str, Any]], ...]


QUESTIONS = (
    Question("What is 12*34?", (("calculator", {"expression": "12*34"}),)),
    Question("Where is the Louvre?", (("lookup", {"topic": "Louvre"}),)),
    Question("What is the capital of Kenya?", (("lookup", {"topic": "Kenya"}),)),
    Question("What time is it now?", (("clock", {}),)),
    Question("What is 25*4+3?", (("calculator", {"expression": "25*4+3"}),)),
)

_ACTIONS = {"preserve": "kept it on the device", "swap": "swapped it to host memory", "discard": "dropped it"}


def describe_resume(report: dict[str, Any]) -> str:
    """How the turn began: the paused context reused (kept or swapped back in), recomputed, or a
    fresh request."""
    if not report.get("resumed"):
        return "a fresh request: the conversation's prompt did not extend a paused context, so it was prefilled again"
    resume = report.get("resume") or {}
    kept, swapped, recomputed = (
        resume.get("num_device_blocks_kept", 0),
        resume.get("num_blocks_swapped_in", 0),
        resume.get("num_recomputed_tokens", 0),
    )
    if recomputed:
        return f"resumed the paused request; its context had been dropped: {recomputed} tokens recomputed"
    return f"resumed the paused request, context reused ({kept} blocks kept on the device, {swapped} swapped back in)"


def run_call(name: str, arguments_json: str) -> str:
    function = TOOL_FUNCTIONS.get(name)
    if function is None:
        return f"error: no tool named {name!r}"
    try:
        arguments = json.loads(arguments_json or "{}")
        return function(**arguments) if isinstance(arguments, dict) else f"error: arguments {arguments_json}"
    except (TypeError, ValueError) as error:
        return f"error: {error}"


def ask(
    client: openai.OpenAI,
    model: str,
    question: Question,
    *,
    is_scripted: bool,
    max_turns: int,
    max_tokens: int,
) -> None:
    print(f"\nQ: {question.text}")
    # A scripted (random) model reads no examples or tool schemas: they would only fill its context.
    prefix = [] if is_scripted else FEW_SHOT
    messages: list[Any] = [*prefix, {"role": "user", "content": question.text}]
    for turn in range(max_turns):
        extension: dict[str, Any] = {}
        if is_scripted:
            extension = {
                "script": [{"after_tokens": 8, "tool": tool} for tool, _ in question.plan[turn:]],
                "return_token_ids": True,
            }
        tools: dict[str, Any] = {} if is_scripted else {"tools": TOOLS}
        answer = client.chat.completions.create(
            model=model,
            messages=messages,
            temperature=0,
            max_tokens=max_tokens,
            extra_body={"infercept": extension},
            **tools,
        )
        report = (answer.model_extra or {}).get("infercept", {})
        if turn > 0:
            print(f"  turn {turn + 1}: {describe_resume(report)}")
        choice = answer.choices[0]
        if choice.finish_reason != "tool_calls" or not choice.message.tool_calls:
            print(f"A: {choice.message.content!r} (finish: {choice.finish_reason})")
            return
        call = choice.message.tool_calls[0]
        name, arguments = call.function.name, call.function.arguments
        if is_scripted and turn < len(question.plan):
            arguments = json.dumps(question.plan[turn][1])
            print(f"  call (scripted after 8 tokens): {name}({arguments})")
        else:
            print(f"  the model wrote {choice.message.content or ''!r} and the call {name}({arguments})")
        print(
            f"  while the tool runs, the server {_ACTIONS.get(report.get('context_action'), 'kept the request paused')}"
        )
        result = run_call(name, arguments)
        print(f"  tool result: {result}")
        assistant = choice.message.model_dump(exclude_none=True)
        messages += [assistant, {"role": "tool", "tool_call_id": call.id, "content": result}]
    print(f"A: (stopped after {max_turns} turns)")


@contextlib.contextmanager
def gateway_url(args: argparse.Namespace) -> Iterator[str]:
    """The gateway to talk to: --gateway, or a stack launched here with a gateway beside it."""
    if args.gateway:
        yield args.gateway
        return
    from tooling.launcher import launch

    executor = ["--model", args.model, "--device", args.device]
    template = "" if args.chat_template == "builtin" else None
    with (
        launch(executor, ["--policy", args.policy]) as stack,
        serve_in_thread(
            GatewayConfig(scheduler_address=stack.scheduler_address, chat_template=template)
        ) as url,
    ):
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="the executor's --model (launching a stack)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--policy", default="infercept")
    parser.add_argument(
        "--chat-template",
        choices=("model", "builtin"),
        default="builtin",
        help="the built-in ChatML template with tools (SmolLM2's own ignores tools), or the model's",
    )
    parser.add_argument("--gateway", default="", help="use this running gateway (http://host:port) instead")
    parser.add_argument(
        "--scripted", action="store_true", help="calls from each question's plan (a model that writes none)"
    )
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    with (
        gateway_url(args) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=300.0) as client,
    ):
        model = client.models.list().data[0].id
        print(f"gateway {url}, model {model!r}{' (scripted calls)' if args.scripted else ''}")
        for question in QUESTIONS:
            ask(
                client,
                model,
                question,
                is_scripted=args.scripted,
                max_turns=args.max_turns,
                max_tokens=args.max_tokens,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
