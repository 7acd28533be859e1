"""``infercept-executor``: serve a model's forward passes and KV cache to one scheduler."""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog

from executor_svc.checkpoint import CheckpointError
from executor_svc.config import DTYPES, ExecutorConfig
from executor_svc.model_config import ModelConfigError
from infercept.logs import configure_logging

log = structlog.get_logger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="infercept-executor",
        description="The InferCept executor: model weights, paged KV cache (device + host), swaps, "
        "forward passes and sampling, driven one StepPlan per iteration by the scheduler.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--listen", default="127.0.0.1:50061", help="host:port to serve on (port 0: any free port)"
    )
    p.add_argument(
        "--model", default="default", help="'default' (built-in random model) or a HF-format directory"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="weights and KV dtype")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block (a power of two)")
    blocks = p.add_mutually_exclusive_group()
    blocks.add_argument("--num-device-blocks", type=int, help="device KV blocks (default: 1024 on CPU)")
    blocks.add_argument(
        "--gpu-memory-fraction",
        type=float,
        default=0.9,
        help="on CUDA, size the device pool to this share of memory",
    )
    p.add_argument(
        "--num-host-blocks",
        type=int,
        help="host KV blocks for swapped-out context (default: as many as device blocks, at most 16 GiB)",
    )
    p.add_argument("--max-model-len", type=int, help="longest context served (default: the model's)")
    p.add_argument("--attention-backend", default="auto", help="auto | torch | triton")
    p.add_argument(
        "--threads",
        type=int,
        help="compute threads for the forward (torch intra-op and the numba attention kernel); "
        "default: torch's choice, one per core",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling of requests that bring no seed")
    p.add_argument(
        "--profile", action="store_true", help="print the cost-model profile (measured or cached) and exit"
    )
    p.add_argument("--refresh-profile", action="store_true", help="with --profile: measure even if cached")
    p.add_argument("--port-file", help="write the bound port to this file once serving")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of the console format")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ExecutorConfig:
    return ExecutorConfig(
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        block_size=args.block_size,
        num_device_blocks=args.num_device_blocks,
        gpu_memory_fraction=args.gpu_memory_fraction,
        num_host_blocks=args.num_host_blocks,
        seed=args.seed,
        attention_backend=args.attention_backend,
        max_model_len=args.max_model_len,
        num_threads=args.threads,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    # Imported here so that --help answers without loading torch.
    from executor_svc.engine import Engine

    try:
        engine = Engine(config_from_args(args))
    except (ValueError, OSError, CheckpointError, ModelConfigError) as error:
        print(f"infercept-executor: {error}", file=sys.stderr)
        return 2
    if args.profile:
        from executor_svc.profile_report import format_profile
        from executor_svc.profiler import get_profile

        print(format_profile(get_profile(engine, refresh=args.refresh_profile)))
        return 0
    from executor_svc.server import serve

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    asyncio.run(serve(engine, args.listen, args.port_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
