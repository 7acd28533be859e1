"""Public request ids: unguessable, resolved only exactly and only for their owner."""

from __future__ import annotations

import pytest

from scheduler_svc.admission import RequestError
from scheduler_svc.request_ids import PublicIds


def test_a_public_id_resolves_to_its_request_for_its_owner_only() -> None:
    ids = PublicIds()
    public_id = ids.add(95, owner="alice")
    assert len(public_id) == 22 and public_id != "95"
    assert ids.resolve(public_id, "alice") == 95
    with pytest.raises(RequestError) as caught:
        ids.resolve(public_id, "mallory")
    assert caught.value.code == "PERMISSION_DENIED"


@pytest.mark.parametrize("text", ["95", "٩٥", "", " 95", "x" * 10_000])
def test_internal_numbers_lookalikes_and_oversized_strings_are_no_ids(text: str) -> None:
    ids = PublicIds()
    ids.add(95, owner="")
    with pytest.raises(RequestError) as caught:
        ids.resolve(text, "")
    assert caught.value.code == "NOT_FOUND"


def test_a_removed_id_no_longer_resolves() -> None:
    ids = PublicIds()
    public_id = ids.add(1, owner="")
    ids.remove(public_id)
    assert len(ids) == 0
    with pytest.raises(RequestError):
        ids.resolve(public_id, "")
