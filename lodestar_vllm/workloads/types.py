"""One request of a workload: when it arrives, how long its prompt and answer are, and how to make its text.

Text is synthesised lazily from a recipe of segments (Mooncake prompts average ~50 KB of text; 12k of them held
as strings would cost ~600 MB). A segment is ``(key, tokens)``: the first ``tokens`` tokens of the
deterministic text of ``key``. Requests that share leading segments share a text prefix, which is what the
engines' prefix caches and the routers' prefix indexes see.
"""

from __future__ import annotations

from dataclasses import dataclass

from lodestar_vllm.workloads.text import prompt_text_for, unique_key

Segment = tuple[int, int]  # (text key, tokens)


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    request_id: str
    arrival_time: float  # seconds from workload start
    prompt_tokens: int  # under lodestar_vllm.tokenizer (4 chars/token)
    output_tokens: int
    session_id: str | None = None
    # How to build the text: leading segments shared with other requests give equal text prefixes. Empty means
    # text unique to this request (keyed by request_id).
    segments: tuple[Segment, ...] = ()
    # Literal text (generic JSONL with a prompt or messages); wins over segments.
    text: str | None = None

    def prompt_text(self) -> str:
        """Deterministic prompt text of exactly ``prompt_tokens`` tokens (or the literal text when given)."""
        if self.text is not None:
            return self.text
        if self.segments:
            return prompt_text_for(self.segments)
        return prompt_text_for(((unique_key(self.request_id), self.prompt_tokens),))
