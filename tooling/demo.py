"""``infercept demo``: augmented requests with real Python tools on a live two-process stack.

The built-in default model has random weights: it writes no meaningful tool calls. So each
request carries a synthetic script saying *when* it calls a tool; the tool itself is real Python,
run by the client while the request is paused, and its output is what the model resumes with.
The transcript shows each interception, what the server did with the paused KV context
(preserve, discard or swap), the tool's work, and how the context fared on resume.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import operator
import time
from collections.abc import Callable

from infercept.events import Accepted, Finished, Intercepted, Resumed, TokenDelta
from infercept.sync_client import Client
from infercept.tools import Tool
from infercept.types import SamplingParams, ScriptedCall
from tooling.launcher import launch

_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa"}


def calculator(expression: str) -> str:
    """Evaluate + - * / ** on numbers (no names, no calls): a safe arithmetic tool."""

    def evaluate(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -evaluate(node.operand)
        raise ValueError(f"not arithmetic: {ast.unparse(node)}")

    value = evaluate(ast.parse(expression, mode="eval").body)
    return f"{value:g}"


def lookup(country: str) -> str:
    """The capital of `country`, from a table."""
    return CAPITALS.get(country, "unknown")


@dataclasses.dataclass(frozen=True)
class Call:
    tool: str
    argument: str  # what the task gives the tool: the random model cannot write it
    after_tokens: int  # generated tokens before the call
    wait_s: float  # how long the tool takes (a stand-in for a real API's latency)


@dataclasses.dataclass(frozen=True)
class Task:
    prompt: str
    calls: tuple[Call, ...]
    max_tokens: int


TASKS = (
    Task("Q: What is 12*34+5? Use the calculator. A:", (Call("calc", "12*34+5", 6, 0.15),), 16),
    Task("Q: What is the capital of Kenya? Look it up. A:", (Call("lookup", "Kenya", 5, 0.4),), 14),
    Task(
        "Q: How many seconds are in 3 days, and what is the capital of Japan? A:",
        (Call("calc", "3*24*60*60", 4, 0.1), Call("lookup", "Japan", 6, 0.25)),
        20,
    ),
)
TOOLS: dict[str, Callable[[str], str]] = {"calc": calculator, "lookup": lookup}


def run_task(client: Client, number: int, task: Task) -> None:
    print(f"\n[{number}] {task.prompt}")
    pending = list(task.calls)

    def tool_for(name: str) -> Tool:
        def run(call_text: str) -> str:
            call = next(c for c in pending if c.tool == name)
            pending.remove(call)
            began = time.monotonic()
            time.sleep(call.wait_s)  # the tool's own latency
            output = TOOLS[name](call.argument)
            print(f"    tool    {name}({call.argument!r}) = {output!r}  ({time.monotonic() - began:.2f} s)")
            return f" {output} "

        return Tool(name, trigger=f"</{name}>", fn=run, expected_duration_s=0.2)

    script = [ScriptedCall(after_tokens=c.after_tokens, tool=c.tool) for c in task.calls]
    tools = [tool_for(name) for name in sorted({c.tool for c in task.calls})]
    sampling = SamplingParams(max_tokens=task.max_tokens, temperature=0.0, ignore_eos=True)
    generated: list[int] = []
    with client.stream(prompt=task.prompt, sampling=sampling, tools=tools, script=script) as stream:
        for event in stream:
            if isinstance(event, Accepted):
                print(f"    request {event.request_id} accepted ({event.num_prompt_tokens} prompt tokens)")
            elif isinstance(event, TokenDelta):
                generated += event.token_ids
            elif isinstance(event, Intercepted):
                print(
                    f"    model   {len(generated)} tokens so far: {bytes(t for t in generated if t < 256)!r}"
                )
                print(
                    f"    pause   intercepted as {event.tool!r} with {event.num_context_tokens} tokens of "
                    f"context; the server chose to {event.context_action.upper()} it"
                )
            elif isinstance(event, Resumed):
                print(
                    f"    resume  {event.num_returned_tokens} tokens returned; context: "
                    f"{event.num_device_blocks_kept} blocks kept on the device, "
                    f"{event.num_blocks_swapped_in} swapped back in, "
                    f"{event.num_recomputed_tokens} tokens to recompute"
                )
            elif isinstance(event, Finished):
                u = event.usage
                print(
                    f"    done    {event.finish_reason}: {u.prompt_tokens} prompt, {u.generated_tokens} generated, "
                    f"{u.returned_tokens} returned, {u.recomputed_tokens} recomputed tokens"
                )


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="swap", help="what the server does with paused contexts")
    parser.add_argument("--device", default="auto", help="executor device: auto | cpu | cuda")


def run(policy: str, device: str) -> int:
    """Start the stack (`policy`, the executor on `device`), run the tasks, print the transcript,
    stop the stack."""
    print(f"Starting the executor (tiny random model) and the scheduler (policy {policy}) ...")
    executor_args = ["--model", "tiny", "--device", device, "--num-device-blocks", "256"]
    with launch(executor_args, ["--policy", policy]) as stack, Client(stack.scheduler_address) as client:
        info = client.server_info()
        print(
            f"Serving {info.model!r} on {info.device} ({info.num_device_blocks} device + {info.num_host_blocks} "
            f"host blocks of {info.block_size_tokens} tokens) at {stack.scheduler_address}; logs in {stack.log_dir}"
        )
        print("The model's weights are random: scripts place the tool calls; the tools are real Python.")
        for number, task in enumerate(TASKS, start=1):
            run_task(client, number, task)
        stats = client.server_stats()
        print(
            f"\nServer: {stats['prompt_tokens']} prompt + {stats['decode_tokens']} decode + "
            f"{stats['returned_tokens']} returned + {stats['recomputed_tokens']} recomputed tokens; "
            f"{stats['swap_out_blocks']} blocks swapped out, {stats['swap_in_blocks']} in; "
            f"{stats['device_blocks_free']}/{stats['device_blocks_total']} device blocks free."
        )
    print("Stopped both services.")
    return 0
