"""`infercept-gateway`: the OpenAI-compatible HTTP gateway in front of a scheduler.

infercept-gateway --listen 127.0.0.1:8000 --scheduler 127.0.0.1:50051 --pause-ttl-s 120
    [--token-file FILE] [--ca CA.pem]     # a scheduler that requires a token, serves TLS
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from infercept.auth import read_token
from infercept.tls import read_pem


@dataclasses.dataclass(frozen=True)
class Command:
    config: GatewayConfig
    host: str
    port: int  # 0: any free port
    port_file: Path | None  # where the bound port is written, once serving


def parse_args(argv: Sequence[str] | None = None) -> Command:
    parser = argparse.ArgumentParser(prog="infercept-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8000", help="host:port to serve HTTP on (port 0: any)")
    parser.add_argument("--scheduler", default="127.0.0.1:50051", help="the scheduler's gRPC address")
    parser.add_argument(
        "--model-name", default="", help="the model name clients use (default: the scheduler's)"
    )
    parser.add_argument(
        "--pause-ttl-s", type=float, default=120.0, help="release a paused turn nobody continues after this"
    )
    parser.add_argument(
        "--no-resume", action="store_true", help="never continue paused requests: every turn starts fresh"
    )
    parser.add_argument(
        "--scheduler-timeout-s", type=float, default=60.0, help="wait this long for the scheduler"
    )
    parser.add_argument(
        "--chat-template",
        help="'model' (the model's own, the default), 'builtin' (ChatML with Hermes tool calls, for a "
        "model whose template ignores tools) or a Jinja file to use instead",
    )
    parser.add_argument(
        "--token-file",
        help="the scheduler's bearer token: the first token of this file ('TOKEN' or 'NAME TOKEN' lines)",
    )
    parser.add_argument("--ca", help="PEM CA of the scheduler's certificate: connect with TLS")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    args = parser.parse_args(argv)
    token = read_token(args.token_file) if args.token_file else None
    if args.token_file and token is None:
        parser.error(f"--token-file {args.token_file} holds no token")
    host, _, port = args.listen.rpartition(":")
    config = GatewayConfig(
        scheduler_address=args.scheduler,
        model_name=args.model_name,
        pause_ttl_s=args.pause_ttl_s,
        is_resume_enabled=not args.no_resume,
        scheduler_timeout_s=args.scheduler_timeout_s,
        chat_template=_chat_template(args.chat_template),
        scheduler_token=token,
        scheduler_root_certificates=read_pem(args.ca, "CA certificate") if args.ca else None,
    )
    return Command(config, host or "127.0.0.1", int(port), args.port_file)


def _chat_template(flag: str | None) -> str | None:
    """The --chat-template flag as GatewayConfig.chat_template."""
    if flag is None or flag == "model":
        return None
    return "" if flag == "builtin" else Path(flag).read_text()


class _Server(uvicorn.Server):
    """uvicorn's server that writes its bound port to a file once it serves."""

    def __init__(self, config: uvicorn.Config, port_file: Path | None) -> None:
        super().__init__(config)
        self._port_file = port_file

    @property
    def bound_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self._port_file is not None and self.started:
            self._port_file.write_text(f"{self.bound_port}\n")


def build_server(command: Command) -> _Server:
    app = create_app(command.config)
    return _Server(
        uvicorn.Config(app, host=command.host, port=command.port, log_level="warning", lifespan="on"),
        command.port_file,
    )


def main(argv: Sequence[str] | None = None) -> None:
    build_server(parse_args(argv)).run()


if __name__ == "__main__":
    main()
