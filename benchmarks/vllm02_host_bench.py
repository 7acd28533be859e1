"""The host side of a vLLM 0.2 iteration, measured on the InferCept authors' own Python code.

    python -m benchmarks.vllm02_host_bench --authors-git DIR [--tokenizer tokenizer.json] [--repeats 5]

DIR is a git directory of the authors' repository (WukLab/InferCept; a bare clone will do): its
`vllm/` is extracted to a temporary folder and imported on the CPU, with the modules that need a
GPU, Ray or Gurobi stubbed (none of them runs in the measured code). No model is loaded.

What their harness (`benchmarks/final_tput_bench_real.py`) does each iteration besides the CUDA
events' bracket around `_run_workers("execute_model")` (the model's input preparation, forward
and sampler), each measured as their code does it:

    schedule    LLMEngine._schedule: the scheduler (vllm/core/scheduler.py for the baselines) and
                one SequenceGroupMetadata with its block table per scheduled group
    process     LLMEngine._process_model_outputs: per sequence, append the token, incremental
                detokenization (_decode_sequence: the whole token list concatenated, then
                detokenize_incrementally), the stop strings (_check_stop with the harness's
                ['\\n', 'Editor', 'asa', 'USE']), and a RequestOutput per scheduled group
    harness     the benchmark loop over the outputs (its bookkeeping per output) and the poll of
                returned calls

A decode iteration is timed for batches of B running sequences whose contexts are L tokens, and
the times are fitted as a + b·B + c·B·L (least squares): a per iteration, b per sequence, c per
sequence and context token (the concatenation in _decode_sequence and the output token list
copied into every RequestOutput). A returned token costs an append and a _decode_sequence
(`resume_request`), timed alone at each L; the prompt iterations' host time is reported per
prompt token (everything in it included). The tokenizer stands in for GPT-J's (GPT-2's BPE,
50,257 tokens, one added token that is also its only special one): a byte-level BPE read from a
tokenizer.json (default: the project's real model's, SmolLM2's 49,152 tokens) with its added
tokens cut to the first, <|endoftext|>, as in GPT-2's. Every sampled token is " dummy", as their
harness's sampler returns (`use_api_simulator`), and every returned token "!" (their harness
returns 0s, GPT-2's "!").

Times are the thread's CPU time (time.thread_time: what the measured code itself spends, not the
waits for a core that other processes on a shared machine add), each figure the fastest of
--steps iterations (doing the same work) in the fastest of --repeats runs. Prints the table and the fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

HARNESS_STOP_STRINGS = ["\n", "Editor", "asa", "USE"]  # their vllm/utils.py get_api_stop_strings()
BLOCK_SIZE = 64  # their engine's KV block for GPT-J-6B's heads
MAX_MODEL_LEN = 2048
MAX_NUM_SEQS = 256
SAMPLED_TOKEN = "Ġdummy"  # their simulator's DUMMY_TOKEN (31548 in GPT-2's vocabulary)
RETURNED_TOKEN = "!"  # their harness returns token 0s, GPT-2's "!"


@dataclasses.dataclass(frozen=True)
class Timing:
    batch: int
    context_tokens: int
    schedule_s: float
    process_s: float
    harness_s: float

    @property
    def total_s(self) -> float:
        return self.schedule_s + self.process_s + self.harness_s


def default_tokenizer() -> Path:
    return (
        Path.home() / ".cache" / "infercept" / "models" / "smollm2-135m-instruct-q4_1-v1" / "tokenizer.json"
    )


def gpt2_like_tokenizer(source: Path, copy: Path) -> Any:
    """The byte-level BPE at `source` dressed as GPT-2's (GPT-J's) tokenizer: one added token,
    its first (<|endoftext|> in SmolLM2's, as in GPT-2's), which is also its only special token
    (bos = eos = unk). vLLM 0.2's detokenizer checks every token against the tokenizer's added and
    special tokens, whose number sets that cost."""
    from transformers import PreTrainedTokenizerFast

    values = json.loads(source.read_text())
    values["added_tokens"] = values["added_tokens"][:1]
    copy.write_text(json.dumps(values))
    special = values["added_tokens"][0]["content"]
    return PreTrainedTokenizerFast(
        tokenizer_file=str(copy), bos_token=special, eos_token=special, unk_token=special
    )


def import_authors_vllm(git_dir: Path, into: Path) -> dict[str, Any]:
    """Extract `vllm/` from the repository at `git_dir` into `into` and import the modules the
    measurement needs, with GPU-, Ray- and Gurobi-only modules stubbed."""
    archive = subprocess.run(
        ["git", f"--git-dir={git_dir}", "archive", "HEAD", "vllm"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = types.ModuleType("vllm")
    package.__path__ = [str(into / "vllm")]  # its __init__ would start CUDA workers: not run
    sys.modules["vllm"] = package
    for name in ("psutil", "ray", "gurobipy"):
        sys.modules.setdefault(name, types.ModuleType(name))
    for name in ("GRB", "Model", "quicksum", "LinExpr", "Env"):
        setattr(sys.modules["gurobipy"], name, type(name, (), {}))
    cuda_utils = types.ModuleType("vllm.cuda_utils")
    sys.modules["vllm.cuda_utils"] = cuda_utils
    package.cuda_utils = cuda_utils  # type: ignore[attr-defined]
    names = ("config", "sequence", "sampling_params", "engine.llm_engine", "core.scheduler")
    return {name: importlib.import_module(f"vllm.{name}") for name in names}


class AuthorsEngine:
    """Their LLMEngine without workers: the scheduler, tokenizer and output processing only."""

    def __init__(self, modules: dict[str, Any], tokenizer: Any, num_gpu_blocks: int) -> None:
        config, engine_module = modules["config"], modules["engine.llm_engine"]
        self._sequence, self._sampling = modules["sequence"], modules["sampling_params"]
        scheduler_config = config.SchedulerConfig(
            None, MAX_NUM_SEQS, MAX_MODEL_LEN, False, 0, "D", 0.0, "", 0.0
        )
        cache_config = config.CacheConfig(BLOCK_SIZE, 0.9, 4)
        cache_config.num_gpu_blocks, cache_config.num_cpu_blocks = num_gpu_blocks, 0
        engine = engine_module.LLMEngine.__new__(engine_module.LLMEngine)
        engine.cache_config, engine.scheduler_config = cache_config, scheduler_config
        engine.tokenizer, engine.log_stats = tokenizer, False
        engine.seq_counter = engine_module.Counter()
        engine.scheduler = modules["core.scheduler"].Scheduler(scheduler_config, cache_config)
        engine.paused_swap_out = None
        self.engine = engine
        # Their sampler under the harness (use_api_simulator: vllm/model_executor/layers/simulator.py)
        # returns DUMMY_TOKEN, GPT-2's "Ġdummy", every step but a call's; the same word here.
        self.sampled_token = tokenizer.convert_tokens_to_ids(SAMPLED_TOKEN)
        self.returned_token = tokenizer.convert_tokens_to_ids(RETURNED_TOKEN)
        self.harness_records: dict[str, list[float]] = {}

    def add(self, request_id: str, num_prompt_tokens: int) -> None:
        params = self._sampling.SamplingParams(
            temperature=0.0,
            ignore_eos=True,
            max_tokens=MAX_MODEL_LEN,
            stop=HARNESS_STOP_STRINGS,
            use_api_simulator=True,
            api_invoke_interval=MAX_MODEL_LEN,  # no call inside the measured steps
            api_return_length=0,
            api_exec_time=0.0,
        )
        prompt = [0] * num_prompt_tokens  # the harness's prompts: [0] * prompt_size
        self.engine.add_request(request_id, None, params, prompt)

    def step(self) -> tuple[float, float, float]:
        """One iteration without the model: seconds in _schedule, _process_model_outputs and the
        harness's loop."""
        engine, sequence = self.engine, self._sequence
        start = time.thread_time()
        metadata, outputs, ignored = engine._schedule()
        scheduled_s = time.thread_time()
        # The sampler's answer (made inside the CUDA bracket): a token per sequence computed.
        sampled = [
            [sequence.SequenceOutputs(seq_id, token, {token: 0.0})]
            for group in metadata
            for seq_id in group.seq_data
            for token in (self.sampled_token,)
        ]
        before_process_s = time.thread_time()
        request_outputs = engine._process_model_outputs(sampled, outputs) + ignored
        processed_s = time.thread_time()
        self._harness_loop(request_outputs)
        end = time.thread_time()
        return scheduled_s - start, processed_s - before_process_s, end - processed_s

    def _harness_loop(self, request_outputs: list[Any]) -> None:
        """What final_tput_bench_real.py does with each output of a step: the request's first and
        last output times and its output length."""
        now = time.thread_time()
        for output in request_outputs:
            record = self.harness_records.setdefault(output.request_id, [-1.0, -1.0, 0.0])
            if record[0] == -1.0:
                record[0] = now  # start_generate
            record[1], record[2] = now, len(output.outputs[0].token_ids)  # end_time, end_length

    def decode_returned_s(self, num_tokens: int) -> float:
        """Seconds per returned token of `resume_request`'s loop (append, then _decode_sequence)
        on the first running sequence."""
        group = self.engine.scheduler.running[0]
        seq = group.get_seqs()[0]
        start = time.thread_time()
        for _ in range(num_tokens):
            token = self.returned_token
            seq.append_token_id(token, {token: 0.0})
            self.engine._decode_sequence(seq, group.sampling_params)
        return (time.thread_time() - start) / num_tokens


def measure(
    modules: dict[str, Any], tokenizer: Any, batch: int, context_tokens: int, steps: int
) -> tuple[Timing, float, float]:
    """The fastest decode iteration of `batch` sequences at about `context_tokens`, the cost of a
    returned token there, and the host time of the prompt iterations that computed them."""
    num_blocks = batch * (MAX_MODEL_LEN // BLOCK_SIZE + 1)
    engine = AuthorsEngine(modules, tokenizer, num_blocks)
    for index in range(batch):
        engine.add(str(index), context_tokens)
    prompt_s = 0.0
    while engine.engine.scheduler.waiting:  # prompt iterations
        prompt_s += sum(engine.step())
    # The least disturbed step (the steps do the same work, but other processes share the cores).
    schedule_s, process_s, harness_s = min((engine.step() for _ in range(steps)), key=sum)
    returned_s = engine.decode_returned_s(steps)
    return Timing(batch, context_tokens, schedule_s, process_s, harness_s), returned_s, prompt_s


def fit(timings: list[Timing]) -> tuple[float, float, float]:
    """(a, b, c) of total ≈ a + b·B + c·B·L by least squares, a >= 0 (a negative intercept, the
    noise of a small fixed part, is refitted as 0)."""
    design = np.array([[1.0, t.batch, t.batch * t.context_tokens] for t in timings])
    totals = np.array([t.total_s for t in timings])
    solution, *_ = np.linalg.lstsq(design, totals, rcond=None)
    if solution[0] < 0:
        slopes, *_ = np.linalg.lstsq(design[:, 1:], totals, rcond=None)
        solution = np.concatenate([[0.0], slopes])
    a, b, c = solution.tolist()
    return a, b, c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors-git", type=Path, required=True, help="git dir of WukLab/InferCept")
    parser.add_argument("--tokenizer", type=Path, default=default_tokenizer(), help="a tokenizer.json")
    parser.add_argument("--batches", default="16,64,128,256")
    parser.add_argument("--contexts", default="256,1024")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = gpt2_like_tokenizer(args.tokenizer, Path(folder) / "tokenizer.json")
        modules = import_authors_vllm(args.authors_git, Path(folder))
        timings, returned, prompt_s_per_token = [], {}, []
        print(f"{'B':>4} {'L':>5} {'schedule ms':>12} {'process ms':>11} {'harness ms':>11} {'total ms':>9}")
        for context in (int(x) for x in args.contexts.split(",")):
            for batch in (int(x) for x in args.batches.split(",")):
                runs = [measure(modules, tokenizer, batch, context, args.steps) for _ in range(args.repeats)]
                timing = min((t for t, _, _ in runs), key=lambda t: t.total_s)
                returned[context] = min(r for _, r, _ in runs)
                prompt_s_per_token.append(min(p for _, _, p in runs) / (batch * context))
                timings.append(timing)
                print(
                    f"{batch:>4} {context:>5} {timing.schedule_s * 1e3:>12.3f} {timing.process_s * 1e3:>11.3f}"
                    f" {timing.harness_s * 1e3:>11.3f} {timing.total_s * 1e3:>9.3f}"
                )
    a, b, c = fit(timings)
    print(
        f"fit: {a * 1e6:.1f} us per iteration + {b * 1e6:.2f} us per sequence + {c * 1e9:.2f} ns per sequence·context token"
    )
    for context, seconds in returned.items():
        print(f"returned token at context {context}: {seconds * 1e6:.2f} us")
    print(
        f"prompt iterations: {min(prompt_s_per_token) * 1e9:.0f}-{max(prompt_s_per_token) * 1e9:.0f} ns "
        "per prompt token (everything included)"
    )
    print(f"tokenizer: {args.tokenizer} ({len(tokenizer)} tokens); python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
