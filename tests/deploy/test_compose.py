"""docker-compose.yml, checked offline (no docker engine): the Compose specification's JSON schema,
the references between services, networks and volumes, the addresses the two services use to
reach each other (the gateway included), and that every command runs a declared console script with flags it accepts."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from check_jsonschema.builtin_schemas import get_builtin_schema

from svc_common.healthcheck import DEFAULT_TIMEOUT_S
from tests.deploy.deployfiles import (
    COMPOSE_FILE,
    assert_program_accepts,
    command_args,
    console_scripts,
    duration_s,
    flag_value,
    interpolate,
    load_compose,
    named_volumes,
    port_mapping,
    published_host_ip,
    split_host_port,
    variables,
)

SERVICES = ("executor", "scheduler", "gateway")
GRPC_SERVICES = ("executor", "scheduler")
# The ports the services listen on inside their containers.
EXECUTOR_PORT = 50061
SCHEDULER_PORT = 50051
GATEWAY_PORT = 8000
ANY_ADDRESS = ("0.0.0.0", "::")

# Environments the file is read under: no settings at all (every default), and an operator's.
ENVIRONMENTS = {
    "defaults": {},
    "operator": {
        "INFERCEPT_MODEL": "/models/model",
        "INFERCEPT_DEVICE": "cuda:0",
        "INFERCEPT_POLICY": "vllm",
        "INFERCEPT_PORT": "8051",
        "INFERCEPT_IMAGE": "registry.example.com/infercept:1.2.3",
        "INFERCEPT_PUBLISH_IP": "192.0.2.10",
        "INFERCEPT_EXECUTOR_TOKEN": "an-internal-token",
        "INFERCEPT_GATEWAY_PORT": "8080",
        "INFERCEPT_CHAT_TEMPLATE": "model",
    },
}
LOOPBACK = ("127.0.0.1", "::1", "localhost")

PROGRAM_CASES = [
    pytest.param("executor", "defaults", id="executor-defaults"),
    pytest.param("executor", "operator", id="executor-operator"),
    pytest.param("scheduler", "defaults", id="scheduler-defaults"),
    pytest.param("scheduler", "operator", id="scheduler-operator"),
    pytest.param("gateway", "defaults", id="gateway-defaults"),
    pytest.param("gateway", "operator", id="gateway-operator"),
]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it with no variables set: every default applied."""
    interpolated = interpolate(raw, {})
    assert isinstance(interpolated, dict)
    return interpolated


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def compose_validator() -> jsonschema.protocols.Validator:
    """A validator for the Compose specification schema that check-jsonschema bundles
    (``check-jsonschema --builtin-schema vendor.compose-spec``)."""
    schema = get_builtin_schema("vendor.compose-spec")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(document: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in compose_validator().iter_errors(document)
    ]


# --- The Compose specification -------------------------------------------------------------------


def test_the_file_as_written_matches_the_compose_spec(raw: dict[str, Any]) -> None:
    assert schema_errors(raw) == []


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_the_interpolated_file_matches_the_compose_spec(raw: dict[str, Any], env: dict[str, str]) -> None:
    assert schema_errors(interpolate(raw, env)) == []


def test_the_schema_check_is_not_vacuous(raw: dict[str, Any]) -> None:
    broken = interpolate(raw, {})
    broken["services"]["executor"]["gpu_count"] = 1  # no such service key
    broken["services"]["scheduler"]["depends_on"]["executor"]["condition"] = "service_ready"
    errors = schema_errors(broken)
    assert any("gpu_count" in e for e in errors), errors
    assert any("service_ready" in e for e in errors), errors


def test_check_jsonschema_cli_accepts_the_file() -> None:
    """What an operator or CI runs: ``check-jsonschema --builtin-schema vendor.compose-spec``."""
    cli = Path(sys.executable).with_name("check-jsonschema")
    assert cli.is_file(), "check-jsonschema is in the `test` extra; reinstall the virtualenv"
    result = subprocess.run(
        [str(cli), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_has_a_default(raw: dict[str, Any]) -> None:
    """`docker compose up` works with no .env file and no variables exported."""
    used = variables(raw)
    assert used, "the file is expected to be configurable through INFERCEPT_* variables"
    assert [v.name for v in used if not v.has_default] == []
    assert all(v.name.startswith("INFERCEPT_") for v in used), [v.name for v in used]


# --- References between services, networks and volumes -----------------------------------------


def test_the_services_are_the_executor_the_scheduler_and_the_gateway(services: dict[str, Any]) -> None:
    assert set(services) == set(SERVICES)


def test_depends_on_targets_exist_and_can_report_health(services: dict[str, Any]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        targets = depends_on if isinstance(depends_on, dict) else {key: {} for key in depends_on}
        for target, condition in targets.items():
            assert target in services, f"{name} depends on an unknown service {target!r}"
            assert target != name
            if (condition or {}).get("condition") == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck to wait for"


def test_the_scheduler_starts_once_the_executor_is_healthy(services: dict[str, Any]) -> None:
    assert services["scheduler"]["depends_on"] == {"executor": {"condition": "service_healthy"}}


def test_the_gateway_starts_once_the_scheduler_is_healthy(services: dict[str, Any]) -> None:
    assert services["gateway"]["depends_on"] == {"scheduler": {"condition": "service_healthy"}}


def service_networks(service: dict[str, Any]) -> set[str]:
    networks = service.get("networks", ["default"])
    return set(networks)  # a list of names, or a mapping name -> settings


def test_networks_used_are_declared_and_shared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("networks", {}))
    for name, service in services.items():
        assert service_networks(service) <= declared | {"default"}, name
    assert service_networks(services["executor"]) & service_networks(services["scheduler"])
    assert service_networks(services["scheduler"]) & service_networks(services["gateway"])


def test_volumes_used_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        assert set(named_volumes(service)) <= declared, name
    assert declared, "the model cache needs a named volume"


def test_the_model_cache_is_a_volume_at_INFERCEPT_CACHE_DIR(services: dict[str, Any]) -> None:
    executor = services["executor"]
    cache_dir = executor["environment"]["INFERCEPT_CACHE_DIR"]
    assert cache_dir in named_volumes(executor).values()


# --- Addresses ------------------------------------------------------------------------------------


def listen_address(service: dict[str, Any]) -> tuple[str, int]:
    value = flag_value(command_args(service), "--listen")
    assert value is not None, "every service states its --listen address"
    return split_host_port(value)


def test_every_service_listens_on_every_container_interface(services: dict[str, Any]) -> None:
    """127.0.0.1 inside a container is unreachable from the other container and from the host."""
    assert listen_address(services["executor"]) in [(host, EXECUTOR_PORT) for host in ANY_ADDRESS]
    assert listen_address(services["scheduler"]) in [(host, SCHEDULER_PORT) for host in ANY_ADDRESS]
    assert listen_address(services["gateway"]) in [(host, GATEWAY_PORT) for host in ANY_ADDRESS]


def test_the_gateway_reaches_the_scheduler_by_service_name_and_listen_port(services: dict[str, Any]) -> None:
    value = flag_value(command_args(services["gateway"]), "--scheduler")
    assert value is not None
    assert split_host_port(value) == ("scheduler", listen_address(services["scheduler"])[1])


def test_the_scheduler_reaches_the_executor_by_service_name_and_listen_port(
    services: dict[str, Any],
) -> None:
    executor = services["executor"]
    value = flag_value(command_args(services["scheduler"]), "--executor")
    assert value is not None
    host, port = split_host_port(value)
    aliases = {"executor", executor.get("hostname")}
    networks = executor.get("networks", [])
    if isinstance(networks, dict):
        for settings in networks.values():
            aliases.update((settings or {}).get("aliases", []))
    assert host in aliases
    assert port == listen_address(executor)[1]


@pytest.mark.parametrize("env", ENVIRONMENTS.values(), ids=ENVIRONMENTS.keys())
def test_only_the_scheduler_and_the_gateway_are_published_on_their_listen_ports(
    raw: dict[str, Any], env: dict[str, str]
) -> None:
    services = interpolate(raw, env)["services"]
    mappings = [port_mapping(spec) for spec in services["scheduler"].get("ports", [])]
    assert mappings == [
        (env.get("INFERCEPT_PORT", str(SCHEDULER_PORT)), listen_address(services["scheduler"])[1])
    ]
    mappings = [port_mapping(spec) for spec in services["gateway"].get("ports", [])]
    assert mappings == [
        (env.get("INFERCEPT_GATEWAY_PORT", str(GATEWAY_PORT)), listen_address(services["gateway"])[1])
    ]
    # The executor's API is internal: one executor serves one scheduler.
    assert "ports" not in services["executor"]


def test_the_scheduler_and_the_gateway_are_published_on_loopback_only_by_default(
    services: dict[str, Any],
) -> None:
    """Plain-text, tokenless gRPC (and the gateway over it) must not reach the network unless the
    operator says so."""
    for spec in services["scheduler"]["ports"] + services["gateway"]["ports"]:
        assert published_host_ip(spec) in LOOPBACK, spec


def test_the_operator_chooses_the_published_address(raw: dict[str, Any]) -> None:
    env = ENVIRONMENTS["operator"]
    services = interpolate(raw, env)["services"]
    for name in ("scheduler", "gateway"):
        assert [published_host_ip(spec) for spec in services[name]["ports"]] == [env["INFERCEPT_PUBLISH_IP"]]


def test_both_services_get_the_same_executor_token(raw: dict[str, Any]) -> None:
    from executor_svc.main import EXECUTOR_TOKEN_ENV

    services = interpolate(raw, ENVIRONMENTS["operator"])["services"]
    tokens = {name: services[name]["environment"].get(EXECUTOR_TOKEN_ENV) for name in GRPC_SERVICES}
    assert tokens == {"executor": "an-internal-token", "scheduler": "an-internal-token"}


def test_health_checks_probe_each_service_on_its_listen_port(services: dict[str, Any]) -> None:
    assert importlib.util.find_spec("svc_common.healthcheck") is not None
    for name in GRPC_SERVICES:
        service = services[name]
        check = service["healthcheck"]
        test = check["test"]
        # CMD (exec form, no shell): python and the project are all the probe needs in the image.
        assert test[:4] == ["CMD", "python", "-m", "svc_common.healthcheck"], name
        host, port = split_host_port(test[4])
        assert host in ("127.0.0.1", "localhost"), name
        assert port == listen_address(service)[1], name
        # Docker must not kill the probe before the probe's own deadline has passed.
        probe_timeout = float(flag_value(test, "--timeout") or DEFAULT_TIMEOUT_S)
        assert duration_s(check["timeout"]) > probe_timeout, name
        assert duration_s(check["start_period"]) >= 60, f"{name}: loading a model takes time"
        assert check.get("retries", 3) >= 1


def test_the_gateways_health_check_asks_its_http_health_route_on_its_listen_port(
    services: dict[str, Any],
) -> None:
    gateway = services["gateway"]
    check = gateway["healthcheck"]
    assert check["test"][:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{listen_address(gateway)[1]}/health" in check["test"][3]
    assert duration_s(check["timeout"]) > 5  # the probe's own urlopen timeout


# --- Resources and lifecycle ---------------------------------------------------------------------


def test_the_executor_reserves_one_nvidia_gpu(services: dict[str, Any]) -> None:
    devices = services["executor"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    (device,) = devices
    assert device["driver"] == "nvidia"
    assert device.get("count") == 1 or len(device.get("device_ids", [])) == 1
    assert "gpu" in device["capabilities"]
    assert "deploy" not in services["scheduler"], "the scheduler never uses the GPU"
    assert "deploy" not in services["gateway"], "the gateway never uses the GPU"


def test_services_restart_and_stop_gracefully(services: dict[str, Any]) -> None:
    from executor_svc.server import GRACE_S as EXECUTOR_GRACE_S
    from scheduler_svc.server import GRACE_S as SCHEDULER_GRACE_S

    # The gateway's uvicorn finishes its open HTTP requests (a turn ends at a tool call or the end).
    grace_s = {"executor": EXECUTOR_GRACE_S, "scheduler": SCHEDULER_GRACE_S, "gateway": 5.0}
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        # Docker's default is 10 s; the servers need their gRPC grace period and some more.
        assert duration_s(service["stop_grace_period"]) >= 2 * grace_s[name], name
        assert service.get("init") is True, f"{name}: an init forwards SIGTERM and reaps children"


def test_every_service_runs_the_same_image(services: dict[str, Any]) -> None:
    assert services["executor"]["image"] == services["scheduler"]["image"] == services["gateway"]["image"]
    assert services["executor"]["build"] == services["scheduler"]["build"] == services["gateway"]["build"]
    assert services["executor"]["build"]["context"] == "."


# --- The programs --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_the_command_is_a_declared_console_script(services: dict[str, Any], service: str) -> None:
    program = command_args(services[service])[0]
    assert program in console_scripts(), f"{program} is not in pyproject's [project.scripts]"


@pytest.mark.parametrize(("service", "env"), PROGRAM_CASES)
def test_the_program_accepts_the_command(raw: dict[str, Any], service: str, env: str) -> None:
    """Every flag of the command is one the program knows, with a value it accepts."""
    assert_program_accepts(command_args(interpolate(raw, ENVIRONMENTS[env])["services"][service]))
