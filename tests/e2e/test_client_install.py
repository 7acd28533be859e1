"""The client library installs on its own: `pip install ./client` into a fresh virtual environment
(no system site packages, no PYTHONPATH) brings grpcio and protobuf, not torch, and its Client and
AsyncClient each run a generation against a real stack started from the main environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from tooling.launcher import Stack

ROOT = Path(__file__).resolve().parents[2]
PIP_TIMEOUT_S = 900  # a fresh environment's grpcio, protobuf and the build's grpcio-tools


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The interpreter of a fresh environment holding the installed client and nothing else."""
    env_dir = tmp_path_factory.mktemp("client-venv")
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # From the package index through this machine's pip configuration, as a user would.
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT / "client")],
        check=True,
        timeout=PIP_TIMEOUT_S,
        env=_clean_env(),
    )
    yield python


def _clean_env() -> dict[str, str]:
    """The environment without anything that would reach the main environment's packages."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run_in(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    """`code` run by `python` from a directory outside the checkout (so nothing of it is importable)."""
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=python.parent,
        env=_clean_env(),
    )


def test_the_fresh_environment_has_no_torch_and_the_client_outside_the_checkout(client_python: Path) -> None:
    assert client_python.parent.parent != Path(sys.prefix)
    torch = run_in(client_python, "import torch")
    assert torch.returncode != 0 and "ModuleNotFoundError" in torch.stderr
    located = run_in(
        client_python,
        """
        import importlib.metadata, infercept, infercept.v1.generation_pb2_grpc
        print(infercept.__file__)
        print(sorted(r.split(">")[0].split("<")[0].split("=")[0].strip()
                     for r in importlib.metadata.requires("infercept-client")))
        """,
    )
    assert located.returncode == 0, located.stderr
    path, requirements = located.stdout.splitlines()
    assert str(ROOT) not in path and "site-packages" in path
    assert requirements == "['grpcio', 'protobuf']"


def test_client_and_async_client_generate_against_a_real_stack(client_python: Path, stack: Stack) -> None:
    result = run_in(
        client_python,
        f"""
        import asyncio, json
        from infercept import AsyncClient, Client, SamplingParams

        sampling = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
        with Client({stack.scheduler_address!r}) as client:
            blocking = client.generate(prompt_token_ids=[1, 2, 3], sampling=sampling)

        async def generate_async():
            async with AsyncClient({stack.scheduler_address!r}) as client:
                return await client.generate(prompt_token_ids=[1, 2, 3], sampling=sampling)

        awaited = asyncio.run(generate_async())
        print(json.dumps([[r.output_token_ids, r.finish_reason] for r in (blocking, awaited)]))
        """,
    )
    assert result.returncode == 0, result.stderr
    (blocking_ids, blocking_reason), (awaited_ids, awaited_reason) = json.loads(result.stdout)
    assert blocking_reason == awaited_reason == "length"
    assert len(blocking_ids) == 5
    assert blocking_ids == awaited_ids, "greedy: both clients get the same tokens"
