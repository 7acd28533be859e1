"""Reading the deployment files offline: docker-compose.yml (with Compose's variable interpolation),
the Dockerfile, .dockerignore, the Makefile's stub-generation command and pyproject's scripts.

No docker engine is needed: these are plain parsers, kept small and strict (anything they do not
understand raises rather than being skipped).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"


# --- YAML and Compose interpolation -------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    """The YAML document at `path` as plain dicts/lists/scalars (anchors and merge keys resolved),
    read the way Compose reads it (YAML 1.2, safe types)."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def load_compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


_TOKEN = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[_A-Za-z][_A-Za-z0-9]*))")
_BRACED = re.compile(r"(?P<name>[_A-Za-z][_A-Za-z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?\Z", re.S)


@dataclasses.dataclass(frozen=True)
class Variable:
    """One ``$NAME`` / ``${NAME[op arg]}`` reference in a Compose file."""

    name: str
    op: str | None  # None, "-", ":-", "?", ":?", "+", ":+"
    arg: str

    @property
    def has_default(self) -> bool:
        return self.op in ("-", ":-")


def _parse_braced(body: str, text: str) -> Variable:
    if "${" in body or "{" in body:
        raise ValueError(f"nested interpolation is not understood by these checks: {text!r}")
    m = _BRACED.match(body)
    if m is None:
        raise ValueError(f"invalid interpolation ${{{body}}} in {text!r}")
    return Variable(m["name"], m["op"], m["arg"] or "")


def variables(value: Any) -> list[Variable]:
    """Every variable referenced anywhere in `value` (strings in nested dicts/lists)."""
    found: list[Variable] = []
    if isinstance(value, str):
        for m in _TOKEN.finditer(value):
            if m["braced"] is not None:
                var = _parse_braced(m["braced"], value)
                found.append(var)
                found.extend(variables(var.arg))
            elif m["named"] is not None:
                found.append(Variable(m["named"], None, ""))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(variables(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(variables(item))
    return found


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """`value` with Compose's variable interpolation applied to every string, as ``docker compose``
    does before it validates the file: ``$$``, ``$NAME``, ``${NAME}``, ``${NAME:-default}``,
    ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``, ``${NAME:+alt}``, ``${NAME+alt}``.
    Mapping keys are left alone (Compose does not interpolate them)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        if m["escaped"] is not None:
            return "$"
        if m["named"] is not None:
            return env.get(m["named"], "")
        var = _parse_braced(m["braced"], value)
        is_set = var.name in env
        non_empty = bool(env.get(var.name))
        present = non_empty if var.op is not None and var.op.startswith(":") else is_set
        if var.op is None:
            return env.get(var.name, "")
        if var.op in ("-", ":-"):
            return env[var.name] if present else str(interpolate(var.arg, env))
        if var.op in ("?", ":?"):
            if not present:
                raise ValueError(f"required variable {var.name} is missing: {var.arg}")
            return env[var.name]
        return str(interpolate(var.arg, env)) if present else ""  # "+" and ":+"

    return _TOKEN.sub(replace, value)


# --- Reading a compose service ------------------------------------------------------------------


def command_args(service: dict[str, Any]) -> list[str]:
    """The service's command as an argument list (exec form; a string is split like Compose does)."""
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list) and command, "a service needs an explicit command"
    return [str(arg) for arg in command]


def flags(args: list[str]) -> list[str]:
    """The long options used in an argument list (``--name`` of ``--name value`` or ``--name=v``)."""
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]


def flag_value(args: list[str], flag: str) -> str | None:
    """The value given to `flag` in `args` (``--flag value`` or ``--flag=value``), or None."""
    for i, arg in enumerate(args):
        if arg == flag:
            assert i + 1 < len(args), f"{flag} has no value in {args}"
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def split_host_port(address: str) -> tuple[str, int]:
    """("host", port) from "host:port" or "[v6]:port"."""
    host, sep, port = address.rpartition(":")
    assert sep and host and port.isdigit(), f"not host:port: {address!r}"
    return host.strip("[]"), int(port)


def port_mapping(spec: str | int | dict[str, Any]) -> tuple[str | None, int]:
    """(published host port or None, container port) of one entry of a service's `ports`."""
    if isinstance(spec, dict):
        published = spec.get("published")
        return (None if published is None else str(published)), int(spec["target"])
    text = str(spec).split("/", 1)[0]
    parts = text.rsplit(":", 2)
    target = int(parts[-1])
    return (parts[-2] if len(parts) >= 2 else None), target


def published_host_ip(spec: str | int | dict[str, Any]) -> str | None:
    """The host address one entry of a service's `ports` is published on (None: every address)."""
    if isinstance(spec, dict):
        host_ip = spec.get("host_ip")
        return None if host_ip is None else str(host_ip)
    parts = str(spec).split("/", 1)[0].rsplit(":", 2)
    return parts[0].strip("[]") if len(parts) == 3 else None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float:
    """Seconds in a Compose duration such as "30s", "1m30s", "500ms"."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Compose duration: {text!r}")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volumes a service mounts: volume name -> container path (bind mounts left out)."""
    mounts: dict[str, str] = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                mounts[entry["source"]] = entry["target"]
            continue
        source, _, rest = str(entry).partition(":")
        if rest and not source.startswith(("/", ".", "~", "$")):
            mounts[source] = rest.split(":", 1)[0]
    return mounts


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # everything after the keyword, continuation lines joined
    line: int  # 1-based line of the keyword

    def exec_form(self) -> list[str] | None:
        """The JSON-array form of the arguments (CMD ["a", "b"]), or None for the shell form."""
        text = self.args.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed), text
        return parsed


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, ``\\`` continuations joined (comment
    lines inside a continued instruction are skipped, as Docker does). Heredocs are refused."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        logical = "".join(pending).strip()
        pending = []
        keyword, _, args = logical.partition(" ")
        if "<<" in args and keyword.upper() in ("RUN", "COPY"):
            raise ValueError(f"line {start}: heredocs are not understood by these checks")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    if pending:
        raise ValueError("the Dockerfile ends inside a continued instruction")
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """Default values of the ARGs declared (``ARG NAME=value``)."""
    defaults: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, sep, value = ins.args.partition("=")
            if sep:
                defaults[name.strip()] = value.strip().strip('"')
    return defaults


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    """Values set by ENV (``ENV A=1 B=2`` form; the legacy ``ENV A 1`` form too)."""
    values: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:
            values[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            values[name] = value
    return values


# --- Makefile, protoc and pyproject -------------------------------------------------------------


def makefile_protoc_command() -> str:
    """The `proto` target's protoc command line from the Makefile (continuations joined)."""
    lines = MAKEFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "grpc_tools.protoc" in line:
            command = [line.rstrip()]
            j = i
            while command[-1].endswith("\\"):
                command[-1] = command[-1][:-1]
                j += 1
                command.append(lines[j].rstrip())
            return " ".join(part.strip() for part in command)
    raise AssertionError("the Makefile has no grpc_tools.protoc command")


def protoc_options(command: str) -> dict[str, Any]:
    """What a protoc command generates: include dirs, the ``--X_out=DIR`` outputs and the plugin
    names (not their paths, which differ between a venv and an image)."""
    includes: list[str] = []
    outputs: dict[str, str] = {}
    plugins: set[str] = set()
    for word in command.split():
        if word.startswith("-I"):
            includes.append(word[2:])
        elif word.startswith("--proto_path="):
            includes.append(word.split("=", 1)[1])
        elif word.startswith("--plugin="):
            plugins.add(word.split("=", 2)[1])
        elif re.match(r"--\w+_out=", word):
            name, _, directory = word[2:].partition("=")
            outputs[name] = directory
    return {"includes": includes, "outputs": outputs, "plugins": plugins}


def pyproject() -> dict[str, Any]:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)


def console_scripts() -> dict[str, str]:
    """``[project.scripts]``: console script name -> "module:function"."""
    return dict(pyproject()["project"].get("scripts", {}))


def run_entry_point(
    entry_point: str, args: list[str], timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a console script's target ("module:function") with `args` as its command line, the way
    the generated script does (``sys.exit(function())``), in a fresh interpreter."""
    module, _, function = entry_point.partition(":")
    launcher = f"import sys; from {module} import {function} as main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", launcher, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
    )


def help_mentions(help_text: str, flag: str) -> bool:
    """Whether `flag` appears in a program's --help text as a whole option (not as a prefix)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def assert_program_accepts(args: list[str]) -> None:
    """The program `args[0]` (a console script) knows every flag in `args` and accepts their
    values: its target runs with the same arguments and ``--help`` last (argparse checks each
    option's type, choices and conflicts as it reaches it, then prints the help and exits 0 before
    anything is served), and the help lists every flag used."""
    scripts = console_scripts()
    assert args[0] in scripts, f"{args[0]} is not in pyproject's [project.scripts]"
    result = run_entry_point(scripts[args[0]], [*args[1:], "--help"])
    assert result.returncode == 0, result.stderr
    unknown = [flag for flag in flags(args[1:]) if not help_mentions(result.stdout, flag)]
    assert unknown == [], f"{args[0]} --help does not list {unknown}"
