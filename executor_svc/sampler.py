"""Token sampling: greedy, temperature, top-k, top-p, reproducible per request.

The random draw for a request's token at position p is seeded by (request seed, p) alone. So a
seeded request samples the same tokens whatever it is batched with, however many times its
context was swapped, discarded or recomputed, and even on a restarted executor.
"""

from __future__ import annotations

import dataclasses

import torch

_MASK64 = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """temperature 0 is greedy; top_p 1 and top_k 0 disable their filters."""

    temperature: float
    top_p: float
    top_k: int
    seed: int

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


@dataclasses.dataclass(frozen=True)
class Draw:
    token_id: int
    logprob: float


def mix_seed(seed: int, position: int) -> int:
    """A 63-bit seed for one draw: splitmix64 of the request seed and the token position."""
    z = (seed + 0x9E3779B97F4A7C15 * (position + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def filtered_log_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probabilities (vocab,) after temperature, top-k and top-p; filtered tokens get -inf."""
    scaled = logits.float() / params.temperature
    if 0 < params.top_k < scaled.numel():
        kth_largest = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth_largest, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens strictly more likely than it already reach top_p.
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_before >= params.top_p
        scaled = scaled.masked_fill(drop_sorted.scatter(0, order, drop_sorted), float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def sample(logits: torch.Tensor, params: list[SamplingParams], positions: list[int]) -> list[Draw]:
    """Draw one token per row of logits (rows, vocab); positions[i] is where row i's token goes."""
    draws: list[Draw | None] = [None] * len(params)
    greedy_rows = [i for i, p in enumerate(params) if p.is_greedy]
    if greedy_rows:
        greedy_ids = logits[greedy_rows].argmax(dim=-1).tolist()
        for row, token_id in zip(greedy_rows, greedy_ids, strict=True):
            draws[row] = Draw(token_id, 0.0)
    for row, p in enumerate(params):
        if not p.is_greedy:
            draws[row] = _draw(logits[row], p, positions[row])
    return [d for d in draws if d is not None]


def _draw(logits: torch.Tensor, params: SamplingParams, position: int) -> Draw:
    log_probs = filtered_log_probs(logits, params)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(mix_seed(params.seed, position))
    # Inverse-CDF sampling with a CPU draw, the same on every device type. The target lies in
    # (0, total], so the first index whose cumulative mass reaches it has positive probability.
    uniform = 1.0 - torch.rand((), generator=generator, dtype=torch.float64).item()
    cdf = torch.cumsum(log_probs.exp().double(), dim=-1)
    target = torch.tensor([uniform * cdf[-1].item()], dtype=torch.float64, device=cdf.device)
    token_id = min(int(torch.searchsorted(cdf, target).item()), logits.numel() - 1)
    return Draw(token_id, float(log_probs[token_id].item()))
