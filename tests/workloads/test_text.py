"""Synthesised text: exact token counts, prefix stability, and no accidental sharing between keys."""

from lodestar_vllm.tokenizer import CHARS_PER_TOKEN, encode, estimate_tokens, text_block_hashes
from lodestar_vllm.workloads.text import TAG_TOKENS, prompt_text_for, segment_text, stable_key
from lodestar_vllm.workloads.types import WorkloadRequest


def test_segment_has_exactly_the_requested_tokens() -> None:
    for tokens in (1, 2, 3, 4, 511, 512, 513, 5000):
        text = segment_text(stable_key("t", tokens), tokens)
        assert len(text) == tokens * CHARS_PER_TOKEN
        assert estimate_tokens(text) == len(encode(text)) == tokens


def test_shorter_segment_is_a_prefix_of_the_longer_one() -> None:
    key = stable_key("prefix")
    assert segment_text(key, 3000).startswith(segment_text(key, 700))


def test_different_keys_differ_within_the_tag() -> None:
    texts = {segment_text(stable_key("k", i), 64)[: TAG_TOKENS * CHARS_PER_TOKEN] for i in range(2000)}
    assert len(texts) == 2000


def test_stable_key_is_deterministic_and_distinguishes_parts() -> None:
    assert stable_key("a", 1) == stable_key("a", 1)
    assert stable_key("a", 1) != stable_key("a", 2) != stable_key("b", 1)


def test_shared_segments_share_exactly_their_blocks() -> None:
    shared = (stable_key("system"), 256)
    a = prompt_text_for([shared, (stable_key("a"), 300)])
    b = prompt_text_for([shared, (stable_key("b"), 300)])
    ha, hb = text_block_hashes(a, 16), text_block_hashes(b, 16)
    common = next(i for i, (x, y) in enumerate(zip(ha, hb, strict=True)) if x != y)
    assert common == 256 // 16


def test_request_without_segments_gets_unique_text_of_its_length() -> None:
    a = WorkloadRequest("r1", 0.0, 123, 5)
    b = WorkloadRequest("r2", 0.0, 123, 5)
    assert estimate_tokens(a.prompt_text()) == 123
    assert a.prompt_text() == WorkloadRequest("r1", 9.0, 123, 7).prompt_text()
    assert a.prompt_text()[:12] != b.prompt_text()[:12]


def test_literal_text_wins() -> None:
    assert WorkloadRequest("r", 0.0, 2, 1, text="hello wo").prompt_text() == "hello wo"
