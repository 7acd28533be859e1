"""The waste model (DESIGN §5): GPU memory × time each strategy wastes on a paused request.

Waste is in token·seconds: KV memory is proportional to tokens, so the bytes per token cancel out
when strategies are compared. Each function is pure; times come from the policy's CostModel.

    preserve  W_p = remaining_s × context
    discard   W_d = Σ_{k=1..n} T_iter × min(k·chunk, context)          the request's own memory
                  + n × (T_iter − T_fwd(batch)) × batch_context        the others' stalled memory
              n = ceil(context / chunk), T_iter = T_fwd(batch + chunk)
    swap      W_s = (T_out(blocks) + T_in(blocks)) × batch_context,   blocks = ceil(context / block)
"""

from __future__ import annotations

from scheduler_svc.cost_model import CostModel


def preserve_waste(context_tokens: int, remaining_s: float) -> float:
    """W_p = remaining_s × context_tokens: the context's memory held idle until the call returns.
    ValueError for a negative context or time."""
    _check_non_negative(context_tokens=context_tokens, remaining_s=remaining_s)
    return remaining_s * context_tokens


def discard_waste(
    context_tokens: int,
    chunk_tokens: int,
    batch_tokens: int,
    batch_context_tokens: int,
    cost: CostModel,
) -> float:
    """W_d of recomputing `context_tokens` in n = ceil(context / chunk) chunks, each riding on an
    iteration that also computes `batch_tokens` tokens of the running batch, whose requests hold
    `batch_context_tokens` of KV:

        T_iter = T_fwd(batch_tokens + chunk_tokens)
        own    = Σ_{k=1..n} T_iter × min(k·chunk, context)
               = T_iter × (chunk × n(n−1)/2 + context)       (k < n: k·chunk < context; k = n: context)
        shared = n × (T_iter − T_fwd(batch_tokens)) × batch_context_tokens

    Every chunk, the last included, is charged as a full one. ValueError if chunk_tokens < 1 or a
    count is negative."""
    if chunk_tokens < 1:
        raise ValueError(f"discard waste: chunk_tokens must be >= 1, got {chunk_tokens}")
    _check_non_negative(
        context_tokens=context_tokens, batch_tokens=batch_tokens, batch_context_tokens=batch_context_tokens
    )
    if context_tokens == 0:
        return 0.0
    num_chunks = -(-context_tokens // chunk_tokens)
    iteration_s = cost.forward_s(batch_tokens + chunk_tokens)
    own = iteration_s * (chunk_tokens * num_chunks * (num_chunks - 1) // 2 + context_tokens)
    added_s = iteration_s - cost.forward_s(batch_tokens)
    shared = num_chunks * added_s * batch_context_tokens
    return own + shared


def swap_waste(
    context_tokens: int, block_size_tokens: int, batch_context_tokens: int, cost: CostModel
) -> float:
    """W_s of an unbudgeted swap, out now and in at the resume, each stalling a batch that holds
    `batch_context_tokens` of KV:

        W_s = (T_out(blocks) + T_in(blocks)) × batch_context_tokens,   blocks = ceil(context / block)

    ValueError if block_size_tokens < 1 or a count is negative."""
    if block_size_tokens < 1:
        raise ValueError(f"swap waste: block_size_tokens must be >= 1, got {block_size_tokens}")
    _check_non_negative(context_tokens=context_tokens, batch_context_tokens=batch_context_tokens)
    num_blocks = -(-context_tokens // block_size_tokens)
    return (cost.swap_out_s(num_blocks) + cost.swap_in_s(num_blocks)) * batch_context_tokens


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"waste: {name} must be >= 0, got {value}")
