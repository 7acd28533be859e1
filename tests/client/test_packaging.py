"""The client's build hook (client/setup.py) generates the stubs `make proto` generates, from every
.proto file, and asks for the runtime versions the generated code accepts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_STUBS = ROOT / "client" / "infercept" / "v1"


def build_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("client_setup", ROOT / "client" / "setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not as __main__: nothing is built
    return module


def test_the_hook_reads_every_proto_file() -> None:
    found = {path.resolve() for path in build_hook().protos()}
    assert found == {path.resolve() for path in (ROOT / "proto").rglob("*.proto")}
    assert found


def test_the_hook_generates_what_make_proto_generates(tmp_path: Path) -> None:
    """Byte for byte, with this environment's grpcio-tools (the one `make proto` ran with)."""
    build_hook().generate_stubs(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py"))
    assert [p.name for p in generated] == sorted(
        f"{proto.stem}{suffix}"
        for proto in (ROOT / "proto").rglob("*.proto")
        for suffix in ("_pb2.py", "_pb2_grpc.py")
    )
    for relative in generated:
        made = ROOT / "client" / relative
        assert made.read_bytes() == (tmp_path / relative).read_bytes(), (
            f"{relative} differs from make proto's"
        )


def test_the_runtime_is_at_least_the_generator() -> None:
    requirements = {r.name: r for r in map(Requirement, build_hook().requirements())}
    assert set(requirements) == {"grpcio", "protobuf"}
    import google.protobuf
    import grpc_tools

    del grpc_tools
    assert requirements["protobuf"].specifier.contains(google.protobuf.__version__)
    assert all(spec.operator == ">=" for r in requirements.values() for spec in r.specifier)
