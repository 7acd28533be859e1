"""The authors' trace, per augmentation, as distributions: what the parametric generator draws
from by default (Assumptions.statistics = "trace"), so that a drawn workload has the trace's
statistics without replaying its requests.

Each figure is a (mean, spread) of the packaged trace (traces/infercept_trace.json) before
truncation; the generator truncates at the model length as the harness does
(`trace_replay.truncate`), so its statistics after truncation at 2048 match the traces README's
table. Image and tts alternate two kinds of call (a media call, then a human turn), which is why
a shape has a cycle of call kinds:

    | prompt | gen, call kind 0 | ret | gen, call kind 1 | ret | gen, kind 0 | ... | last gen |
"""

from __future__ import annotations

import dataclasses

Stat = tuple[float, float]  # (mean, spread: a standard deviation)


@dataclasses.dataclass(frozen=True)
class CallKind:
    generated_tokens: Stat  # generated before the call
    returned_tokens: Stat
    duration_s: Stat


@dataclasses.dataclass(frozen=True)
class TraceShape:
    name: str
    prompt_tokens: Stat
    num_calls: Stat
    min_calls: int  # the fewest calls a request of the trace makes
    last_generated_tokens: Stat  # generated after the last call
    call_kinds: tuple[CallKind, ...]  # cycled: call i is of kind i % len
    num_in_trace: int  # requests of this augmentation in the file: the mix's weight


_CHAT_TURN = CallKind((58.55, 17.29), (39.74, 112.17), (28.23, 18.35))
_HUMAN_TURN = CallKind((7.0, 0.0), (39.74, 112.17), (28.23, 18.35))
TRACE_SHAPES: dict[str, TraceShape] = {
    s.name: s
    for s in (
        TraceShape("math", (405.4, 18.4), (2.81, 1.32), 1, (110.6, 224.6), (CallKind((129.6, 90.1), (20.97, 4.88), (8.3e-5, 2e-5)),), 98),
        TraceShape("qa", (933.5, 6.9), (3.04, 1.18), 1, (166.2, 178.1), (CallKind((189.0, 120.0), (56.74, 8.50), (0.709, 0.209)),), 50),
        TraceShape("ve", (1973.0, 0.0), (5.35, 1.02), 4, (1.0, 0.0), (CallKind((4.0, 0.0), (10.23, 10.74), (0.0851, 0.0147)),), 54),
        TraceShape("chatbot", (108.0, 262.7), (3.46, 1.96), 1, (304.4, 250.8), (_CHAT_TURN,), 65),
        TraceShape("image", (108.0, 262.7), (6.92, 3.92), 2, (1.0, 0.0), (CallKind((58.55, 17.29), (8.0, 0.0), (11.54, 0.93)), _HUMAN_TURN), 65),
        TraceShape("tts", (108.0, 262.7), (6.92, 3.92), 2, (1.0, 0.0), (CallKind((58.55, 17.29), (9.0, 0.0), (6.06, 2.66)), _HUMAN_TURN), 65),
    )
}  # fmt: skip
