"""The Hugging Face `transformers` reference the executor is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.executor.plan_driver import DrivenRequest


def load_reference(model_dir: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval()


@torch.inference_mode()
def reference_logits(model: torch.nn.Module, token_ids: list[int]) -> np.ndarray:
    """(len(token_ids), vocab) logits of one unbatched, unpaged forward pass."""
    output = model(torch.tensor([token_ids]))
    return output.logits[0].float().numpy()


def assert_matches_reference(
    model: torch.nn.Module, requests: list[DrivenRequest], rel_tol: float = 1e-4
) -> None:
    """Every sampled token is the reference's greedy choice, and its logits agree within rel_tol.

    One teacher-forced reference pass over the final sequence checks every step: a greedy
    sequence whose every token is the reference's argmax on its own prefix is the reference's
    greedy continuation.
    """
    for request in requests:
        expected = reference_logits(model, request.tokens)
        for position in range(request.num_prompt_tokens, len(request.tokens)):
            ref_row = expected[position - 1]
            assert request.tokens[position] == int(ref_row.argmax()), (
                f"request {request.request_id}: token at position {position} differs from the reference"
            )
            if position in request.logits:
                ours = request.logits[position]
                rel_err = np.abs(ours - ref_row).max() / np.abs(ref_row).max()
                assert rel_err < rel_tol, (
                    f"request {request.request_id} position {position}: rel err {rel_err:.2e}"
                )
