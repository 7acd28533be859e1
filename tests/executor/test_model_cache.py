"""Built-in models appear in the cache whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor_svc.model_cache import COMPLETE_MARKER, ensure_cached_model


def test_a_failed_build_leaves_no_model_and_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERCEPT_CACHE_DIR", str(tmp_path))

    def broken(staging: Path) -> None:
        (staging / "config.json").write_text("{}")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ensure_cached_model("m", broken)
    assert list((tmp_path / "models").iterdir()) == []


def test_the_model_is_built_once_and_found_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERCEPT_CACHE_DIR", str(tmp_path))
    builds: list[Path] = []

    def build(staging: Path) -> None:
        builds.append(staging)
        (staging / COMPLETE_MARKER).write_text("{}")

    first = ensure_cached_model("m", build)
    assert ensure_cached_model("m", build) == first == tmp_path / "models" / "m"
    assert len(builds) == 1 and not builds[0].exists(), "the staging directory was renamed into place"
