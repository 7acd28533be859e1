from __future__ import annotations

from pathlib import Path

import pytest

from executor_svc.config import ExecutorConfig
from executor_svc.engine import Engine
from executor_svc.profile_report import format_profile
from executor_svc.profiler import ProfilerBusy, fit_saturation, get_profile, per_block_s, profile_path
from infercept.v1 import executor_pb2 as pb
from svc_common.step_wire import TableUpdate, pack_table_updates, unpack_work


def test_fit_finds_the_knee_of_a_flat_then_linear_curve() -> None:
    tokens = [1, 16, 64, 128, 256, 384, 512, 1024, 2048]
    times = [0.010 if x <= 384 else 0.010 + 4e-5 * (x - 384) for x in tokens]
    saturation, base_s, per_token_s = fit_saturation(tokens, times)
    assert saturation == 384
    assert base_s == pytest.approx(0.010) and per_token_s == pytest.approx(4e-5)


def test_fit_of_a_purely_linear_curve_saturates_at_the_first_point() -> None:
    tokens = [1, 2, 4, 8, 16, 32]
    saturation, _, per_token_s = fit_saturation(tokens, [0.001 * x for x in tokens])
    assert saturation <= 2 and per_token_s == pytest.approx(0.001, rel=0.05)


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("INFERCEPT_CACHE_DIR", str(tmp_path))
    return Engine(
        ExecutorConfig(
            model=str(_tiny_model(tmp_path)), device="cpu", num_device_blocks=128, num_host_blocks=64
        )
    )


def _tiny_model(tmp_path: Path) -> Path:
    from executor_svc.model_config import LlamaConfig
    from executor_svc.random_model import write_random_model

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
    )
    write_random_model(tmp_path / "tiny", config, seed=0)
    return tmp_path / "tiny"


def test_swap_cost_per_block_is_the_slope_between_one_block_and_many() -> None:
    assert per_block_s(0.001, 0.001 + 63 * 2e-5, 64) == pytest.approx(2e-5)


def test_a_swap_is_never_profiled_as_free_when_noise_hides_the_slope() -> None:
    # The one-block call stalled longer than the 64-block one (a busy machine): the 64-block
    # call's time per block stands in, not zero (the executor test on the real Profile saw 0).
    assert per_block_s(0.002, 0.0016, 64) == pytest.approx(0.0016 / 64)
    assert per_block_s(0.001, 0.001, 64) == pytest.approx(0.001 / 64)


def test_profile_is_cached_per_model_device_dtype_and_block_size(engine: Engine) -> None:
    path = profile_path(engine)
    assert "cpu-float32-bs16" in path.name
    measured = get_profile(engine, repeats=1)
    assert path.is_file() and not measured.from_cache
    assert get_profile(engine).from_cache
    report = format_profile(measured)
    assert "saturation point" in report and "swap in" in report


def test_measuring_with_live_requests_is_refused(engine: Engine) -> None:
    engine.step(
        pb.StepPlan(
            new_requests=[pb.NewRequest(request_id=1)],
            block_table_updates=pack_table_updates([TableUpdate(request_id=1, appended_block_ids=[0])]),
        )
    )
    with pytest.raises(ProfilerBusy, match="1 live requests"):
        get_profile(engine, refresh=True)


def test_the_token_grid_stops_once_forwards_are_slow(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from executor_svc import profiler

    monkeypatch.setattr(profiler, "_MAX_PREFILL_SAMPLE_S", 0.0)  # every forward counts as slow
    prefill = [s for s in get_profile(engine, repeats=1).forward_samples if s.context_tokens == 0]
    assert [s.num_batched_tokens for s in prefill] == list(
        profiler._TOKEN_GRID[: profiler._MIN_PREFILL_POINTS]
    )


def test_decode_samples_are_timed_without_computing_their_context(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:

    computed: list[int] = []
    step = engine.step

    def counting_step(plan: pb.StepPlan) -> pb.StepResult:
        computed.extend(
            w.start_position for w in unpack_work(plan.work) if len(w.token_ids) > 1
        )  # chunks of > 1 token
        return step(plan)

    monkeypatch.setattr(engine, "step", counting_step)
    decode = [s for s in get_profile(engine, repeats=1).forward_samples if s.context_tokens > 0]
    assert decode and all(s.context_tokens == 512 for s in decode)
    assert set(computed) == {0}, "only the prefill samples computed chunks, all from position 0"
