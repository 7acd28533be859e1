"""The client's build hook: the gRPC stubs under ``infercept.v1`` are generated from ../proto with
grpcio-tools (a build requirement) when the package is built, never copied from a checkout.

A wheel gets stubs generated into its build directory, so a build never rewrites the checkout's
own (``make proto``'s, made by the checkout's grpcio-tools). An editable install (``pip install
-e``) imports from the checkout: it generates them there only when they are missing. The
dependencies are grpcio and protobuf at least as new as the generator's: the generated code
refuses an older runtime.
"""

from __future__ import annotations

import sys
from importlib import metadata, resources
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent / "proto"
STUB_PACKAGE = Path("infercept") / "v1"


def protos() -> list[Path]:
    found = sorted((PROTO_ROOT / STUB_PACKAGE).glob("*.proto"))
    if not found:
        sys.exit(
            f"infercept-client: no .proto files under {PROTO_ROOT / STUB_PACKAGE}: build from a checkout"
        )
    return found


def generate_stubs(out_dir: Path) -> None:
    """`python -m grpc_tools.protoc -I../proto --python_out --grpc_python_out` for every file,
    as the Makefile's `proto` target runs it, into `out_dir` (the package root)."""
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    for proto in protos():
        args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out_dir}"]
        args += [f"--grpc_python_out={out_dir}", str(proto)]
        if protoc.main(args) != 0:
            sys.exit(f"infercept-client: protoc failed on {proto}")


class BuildWithStubs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            generate_stubs(Path(self.build_lib))
        elif not list((HERE / STUB_PACKAGE).glob("*_pb2.py")):
            generate_stubs(HERE)


def requirements() -> list[str]:
    """grpcio and protobuf, at least the versions the stubs are generated with."""
    return [f"grpcio>={metadata.version('grpcio-tools')}", f"protobuf>={metadata.version('protobuf')}"]


if __name__ == "__main__":  # as setuptools runs it; tests import the hook without building
    setup(cmdclass={"build_py": BuildWithStubs}, install_requires=requirements())
