"""A human-readable rendering of a ProfileResponse."""

from __future__ import annotations

from infercept.v1 import executor_pb2 as pb


def format_profile(profile: pb.ProfileResponse) -> str:
    source = "cached" if profile.from_cache else "measured"
    lines = [
        f"profile ({source}): {profile.model} on {profile.device}, {profile.dtype}, "
        f"block size {profile.block_size_tokens}",
        "",
        f"{'tokens':>8} {'context':>8} {'requests':>8} {'forward ms':>11}",
    ]
    for s in profile.forward_samples:
        lines.append(
            f"{s.num_batched_tokens:>8} {s.context_tokens:>8} {s.num_requests:>8} {s.forward_s * 1e3:>11.2f}"
        )
    lines += [
        "",
        f"saturation point      {profile.saturation_tokens:.0f} tokens",
        f"forward at/below it   {profile.forward_base_s * 1e3:.2f} ms",
        f"forward above it      +{profile.forward_s_per_token * 1e6:.1f} us per token",
        f"swap out              {profile.swap_out_s_per_block * 1e6:.1f} us per block",
        f"swap in               {profile.swap_in_s_per_block * 1e6:.1f} us per block",
        f"swap fixed cost       {profile.swap_fixed_s * 1e6:.1f} us per call",
    ]
    return "\n".join(lines)
