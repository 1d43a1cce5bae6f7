"""How long one engine step takes, from what the scheduler put in it.

    t = overhead + hypot(weight floor, tokens x linear cost + seqs x lm-head cost)
        + prefill attention pairs x cost per pair + decode context tokens x KV read cost
        + tensor-parallel all-reduce (latency per step + bytes per token)

The hypot() is a smooth roofline of the linear layers: a small batch is bound by reading the weights once, a
large one by compute, and around the knee neither hides the other completely (sqrt(a^2 + b^2) fits Vidur's
measured linear-layer times within ~10% from 1 to 4096 tokens, where max(a, b) is 25-40% low at the knee). Prefill attention is compute (quadratic in the chunk's context: a chunk of ``c`` tokens after
``s`` cached ones touches ``c*s + c*(c+1)/2`` pairs); decode attention is bound by reading the KV cache.
"""

from __future__ import annotations

from lodestar_vllm.sim.profiles import StepCoefficients


def prefill_pairs(start: int, chunk: int) -> int:
    """Causal (query, key) pairs of a prefill chunk of ``chunk`` tokens after ``start`` computed ones."""
    return chunk * start + chunk * (chunk + 1) // 2


class StepTimeModel:
    __slots__ = ("overhead", "floor", "floor2", "per_token", "per_seq", "per_pair", "per_ctx", "comm_token")

    def __init__(self, c: StepCoefficients) -> None:
        self.overhead = c.overhead_s + c.comm_s_per_step
        self.floor = c.weight_floor_s
        self.floor2 = c.weight_floor_s * c.weight_floor_s
        self.per_token = c.linear_s_per_token
        self.per_seq = c.lm_head_s_per_seq
        self.per_pair = c.attn_s_per_pair
        self.per_ctx = c.kv_read_s_per_token
        self.comm_token = c.comm_s_per_token

    def duration(self, tokens: int, seqs: int, pairs: int, decode_context: int) -> float:
        """Seconds for a step of ``tokens`` scheduled tokens over ``seqs`` sequences, ``pairs`` prefill
        attention pairs and ``decode_context`` KV tokens read by decode sequences."""
        compute = tokens * self.per_token + seqs * self.per_seq
        return (
            self.overhead
            + (self.floor2 + compute * compute) ** 0.5
            + pairs * self.per_pair
            + decode_context * self.per_ctx
            + tokens * self.comm_token
        )

    def linear_time(self, tokens: int, seqs: int = 0) -> float:
        """The linear-layer part alone (compared with Vidur's linear-op profiles in calibration)."""
        compute = tokens * self.per_token + seqs * self.per_seq
        return (self.floor2 + compute * compute) ** 0.5
