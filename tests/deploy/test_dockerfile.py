"""The Dockerfile and .dockerignore, checked offline (the image is not built here): the base image,
the client's build (which generates the stubs from proto/) before the services', what reaches the build context, the non-root user,
the cache volume, and that the image's default command and docker-compose.yml agree with it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.deploy.deployfiles import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    Instruction,
    arg_defaults,
    assert_program_accepts,
    command_args,
    env_values,
    flag_value,
    interpolate,
    load_compose,
    named_volumes,
    parse_dockerfile,
    pyproject,
    split_host_port,
)


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found = interpolate(load_compose(), {})["services"]
    assert isinstance(found, dict)
    return found


def all_runs(instructions: list[Instruction]) -> str:
    return "\n".join(ins.args for ins in instructions if ins.keyword == "RUN")


def install_step(instructions: list[Instruction]) -> Instruction:
    steps = [ins for ins in instructions if ins.keyword == "RUN" and "pip install ./client" in ins.args]
    assert len(steps) == 1, "the image installs the client and the services in one RUN step"
    return steps[0]


# --- The parser these checks rely on ---------------------------------------------------------------


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = 'ARG A=1\n# a comment\nFROM x:${A} AS base\nRUN echo a \\\n  # inside\n    && echo b\nCMD ["p", "--f"]\n'
    parsed = parse_dockerfile(text)
    assert [i.keyword for i in parsed] == ["ARG", "FROM", "RUN", "CMD"]
    assert parsed[2].args == "echo a     && echo b"
    assert parsed[2].line == 4
    assert parsed[3].exec_form() == ["p", "--f"]
    assert parsed[2].exec_form() is None
    assert interpolate(parsed[1].args, arg_defaults(parsed)) == "x:1 AS base"


# --- Base image and dependencies ------------------------------------------------------------------


def test_the_base_image_is_an_official_cuda_pytorch_image(instructions: list[Instruction]) -> None:
    first = next(ins for ins in instructions if ins.keyword != "ARG")
    assert first.keyword == "FROM", "FROM comes first (after build ARGs)"
    froms = [ins for ins in instructions if ins.keyword == "FROM"]
    image = interpolate(froms[-1].args.split()[0], arg_defaults(instructions))
    assert re.fullmatch(r"pytorch/pytorch:[\w.-]*cuda[\w.-]*", image), image


def test_torch_stays_a_range_so_the_base_images_torch_is_kept() -> None:
    torch = next(
        Requirement(r) for r in pyproject()["project"]["dependencies"] if Requirement(r).name == "torch"
    )
    assert torch.specifier, "torch needs a lower bound"
    assert all(spec.operator in (">=", ">", "!=") for spec in torch.specifier), str(torch.specifier)


def test_triton_can_compile_its_launcher(instructions: list[Instruction]) -> None:
    """Triton (the executor's CUDA attention backend) needs a C compiler at run time."""
    assert re.search(r"apt-get install[^;&]*\bgcc\b", all_runs(instructions))


# --- gRPC stubs -----------------------------------------------------------------------------------


def test_the_image_has_no_protoc_step_of_its_own(instructions: list[Instruction]) -> None:
    """The stubs come from the client's build (client/setup.py, tested against `make proto` in
    tests/client/test_packaging.py), so the image cannot generate them differently."""
    assert "grpc_tools.protoc" not in all_runs(instructions)


def test_the_client_is_installed_before_the_services_that_depend_on_it(
    instructions: list[Instruction],
) -> None:
    runs = all_runs(instructions)
    client = re.search(r"pip install \./client(?=[\s;&]|$)", runs)
    services = re.search(r"pip install \.(?=[\s;&]|$)", runs)
    assert client and services
    assert client.start() < services.start(), "the services depend on infercept-client"
    requirements = [Requirement(r).name for r in pyproject()["project"]["dependencies"]]
    assert "infercept-client" in requirements


# --- Build context --------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context: the
    last pattern matching the path or one of its parent directories decides (``!`` re-includes)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for raw in dockerignore_patterns():
        negate = raw.startswith("!")
        regex = _pattern_regex(raw.lstrip("!").strip("/").removeprefix("./"))
        if any(regex.fullmatch(c) for c in candidates):
            result = not negate
    return result


def test_the_dockerignore_matcher() -> None:
    assert ignored(".venv/bin/python") and ignored("executor_svc/__pycache__/x.pyc")
    assert not ignored("executor_svc/main.py")


def test_local_state_and_host_stubs_stay_out_of_the_context() -> None:
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        "executor_svc/__pycache__/main.cpython-311.pyc",
        ".pytest_cache/v",
        ".mypy_cache/x",
        ".ruff_cache/x",
        "infercept.egg-info/PKG-INFO",
        "client/infercept/v1/executor_pb2.py",
        "client/infercept/v1/executor_pb2_grpc.pyi",
    ):
        assert ignored(path), path


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for ins in instructions:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from") for w in ins.args.split()):
            continue  # from another stage or image, not from the context
        words = [w for w in (ins.exec_form() or ins.args.split()) if not w.startswith("--")]
        sources.extend(words[:-1])
    return sources


def test_copied_sources_exist_and_reach_the_context(instructions: list[Instruction]) -> None:
    for source in copy_sources(instructions):
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is copied but .dockerignore keeps it out"


def test_everything_pip_needs_is_copied_before_the_install(instructions: list[Instruction]) -> None:
    step = install_step(instructions)
    before = copy_sources(instructions[: instructions.index(step)])
    covered = [Path(s.rstrip("/")) for s in before]
    project = pyproject()
    # The client's build reads ../proto (client/setup.py).
    needed = [Path("pyproject.toml"), Path(project["project"]["readme"]), Path("proto"), Path("client")]
    find = project["tool"]["setuptools"]["packages"]["find"]
    for pattern in find["include"]:
        for where in find.get("where", ["."]):
            package = ROOT / where / pattern.rstrip("*")
            if package.is_dir():
                needed.append(package.relative_to(ROOT))
    assert len(needed) > 4, "the services' packages are found"
    for path in needed:
        assert any(path == c or c in path.parents for c in covered), f"{path} is not copied in"
        assert not ignored(str(path))
    for source_file in (
        "svc_common/healthcheck.py",
        "client/setup.py",
        "client/pyproject.toml",
        "executor_svc/main.py",
        "proto/infercept/v1/executor.proto",
    ):
        assert not ignored(source_file), source_file


# --- Runtime --------------------------------------------------------------------------------------


def test_the_image_runs_as_a_created_non_root_user(instructions: list[Instruction]) -> None:
    users = [ins.args.split(":")[0] for ins in instructions if ins.keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert re.search(rf"useradd\b[^;&]*\b{re.escape(users[-1])}\b", all_runs(instructions))


def test_the_model_cache_is_a_volume_the_executor_mounts(
    instructions: list[Instruction], services: dict[str, Any]
) -> None:
    cache_dir = env_values(instructions)["INFERCEPT_CACHE_DIR"]
    volumes: list[str] = []
    for ins in instructions:
        if ins.keyword == "VOLUME":
            volumes.extend(ins.exec_form() or ins.args.split())
    assert cache_dir in volumes
    executor = services["executor"]
    assert executor["environment"]["INFERCEPT_CACHE_DIR"] == cache_dir
    assert cache_dir in named_volumes(executor).values()


def test_the_image_exposes_the_ports_the_services_listen_on(
    instructions: list[Instruction], services: dict[str, Any]
) -> None:
    exposed = {
        int(p.split("/")[0]) for ins in instructions if ins.keyword == "EXPOSE" for p in ins.args.split()
    }
    for service in services.values():
        value = flag_value(command_args(service), "--listen")
        assert value is not None
        assert split_host_port(value)[1] in exposed


def test_the_default_command_is_the_executor_and_valid(instructions: list[Instruction]) -> None:
    assert not [ins for ins in instructions if ins.keyword == "ENTRYPOINT"], "compose commands replace CMD"
    cmds = [ins for ins in instructions if ins.keyword == "CMD"]
    assert cmds, "the image has a default command"
    args = cmds[-1].exec_form()
    assert args is not None, "exec form, so the program gets SIGTERM itself"
    assert args[0] == "infercept-executor"
    assert_program_accepts(args)


def test_the_build_smoke_tests_every_program_compose_runs(
    instructions: list[Instruction], services: dict[str, Any]
) -> None:
    """The build fails early (not at `docker compose up`) if a program cannot even start."""
    step = install_step(instructions)
    for service in services.values():
        program = command_args(service)[0]
        assert re.search(rf"\b{re.escape(program)} --help\b", step.args), program
