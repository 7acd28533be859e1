"""A cost profile measured by a running executor: its Profile (costs) and Describe (pool sizes)."""

from __future__ import annotations

import dataclasses

from infercept.channel import open_channel
from infercept.v1 import executor_pb2 as pb
from infercept.v1 import executor_pb2_grpc
from scheduler_svc.sim.cost_profile import CostProfile, from_profile_response

DESCRIBE_TIMEOUT_S = 30.0
PROFILE_TIMEOUT_S = 1800.0  # a fresh measurement of a large model takes minutes


def fetch_profile(
    address: str, refresh: bool = False, name: str = "", token: str | None = None
) -> CostProfile:
    """The cost profile of the executor at `address` (host:port), presenting its `token` if it
    requires one. `refresh` measures again instead of using the executor's cached profile.
    Raises grpc.RpcError."""
    with open_channel(address, (), token=token) as channel:
        stub = executor_pb2_grpc.ExecutorStub(channel)
        description = stub.Describe(pb.DescribeRequest(), timeout=DESCRIBE_TIMEOUT_S)
        response = stub.Profile(pb.ProfileRequest(refresh=refresh), timeout=PROFILE_TIMEOUT_S)
    profile = from_profile_response(
        response,
        num_device_blocks=description.num_device_blocks,
        num_host_blocks=description.num_host_blocks,
        max_model_len=description.model.max_model_len,
        name=name,
    )
    described = {"executor": address, "kv_bytes_per_block": description.kv_bytes_per_block}
    return dataclasses.replace(profile, assumptions={**profile.assumptions, **described})
