"""Trace readers: Mooncake JSONL, Azure LLM inference CSV, and a generic JSONL of prompts.

Every reader returns requests in file order with arrival times relative to the first record; ordering,
scaling and truncation happen once, in ``lodestar_vllm.workloads.load_workload``. Bad records raise
``WorkloadFormatError`` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from lodestar_vllm.tokenizer import estimate_tokens
from lodestar_vllm.workloads.text import stable_key
from lodestar_vllm.workloads.types import Segment, WorkloadRequest

MOONCAKE_BLOCK_TOKENS = 512
DEFAULT_OUTPUT_TOKENS = 128  # generic JSONL records that do not say


class WorkloadFormatError(ValueError):
    pass


def _json_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkloadFormatError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise WorkloadFormatError(f"{path}:{lineno}: expected a JSON object per line")
            records.append((lineno, record))
    if not records:
        raise WorkloadFormatError(f"{path}: no records")
    return records


def is_mooncake(path: Path) -> bool:
    with path.open(encoding="utf-8") as fh:
        first = fh.readline()
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(record, dict) and "hash_ids" in record and "input_length" in record


def read_mooncake(path: Path, *, name: str = "mooncake") -> list[WorkloadRequest]:
    """``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids`` (one per 512-token block; equal ids
    are equal blocks, so equal ids give equal text). The last block holds the remainder of the prompt."""
    keys: dict[int, int] = {}
    full_segments: dict[int, Segment] = {}  # shared tuples: block 0 alone appears in every request
    # chained hash of a prefix of hash ids -> session of the latest request holding it (ints: hash is unsalted)
    prefix_session: dict[int, str] = {}
    out: list[WorkloadRequest] = []
    for index, (lineno, rec) in enumerate(_json_lines(path)):
        try:
            timestamp_ms = float(rec["timestamp"])
            prompt = int(rec["input_length"])
            output = int(rec["output_length"])
            hash_ids = [int(h) for h in rec["hash_ids"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadFormatError(f"{path}:{lineno}: bad Mooncake record ({exc!r})") from None
        blocks = len(hash_ids)
        if prompt <= 0 or not hash_ids or not (blocks - 1) * MOONCAKE_BLOCK_TOKENS < prompt <= blocks * MOONCAKE_BLOCK_TOKENS:
            raise WorkloadFormatError(
                f"{path}:{lineno}: input_length {prompt} does not fit {blocks} blocks of {MOONCAKE_BLOCK_TOKENS}"
            )
        segments: list[Segment] = []
        for h in hash_ids[:-1]:
            seg = full_segments.get(h)
            if seg is None:
                seg = full_segments[h] = (keys.setdefault(h, stable_key(name, h)), MOONCAKE_BLOCK_TOKENS)
            segments.append(seg)
        last = hash_ids[-1]
        segments.append((keys.setdefault(last, stable_key(name, last)), prompt - MOONCAKE_BLOCK_TOKENS * (blocks - 1)))
        out.append(
            WorkloadRequest(
                request_id=f"{name}-{index}",
                arrival_time=timestamp_ms / 1000.0,
                prompt_tokens=prompt,
                output_tokens=max(1, output),
                session_id=_infer_session(hash_ids, prefix_session, f"{name}-conv-{index}"),
                segments=tuple(segments),
            )
        )
    start = min(r.arrival_time for r in out)
    return [_shift(r, start) for r in out] if start else out


def _infer_session(hash_ids: list[int], prefix_session: dict[int, str], new: str) -> str:
    """The trace has no session ids: a request sharing more than the common first block with an earlier one
    continues that one's conversation (its next turn resends the history); otherwise it starts a new one."""
    chain = []
    h = 0
    for block in hash_ids:
        h = hash((h, block))
        chain.append(h)
    session = new
    for depth in range(len(chain) - 1, 0, -1):  # depth 0 (the common first block) does not count
        if chain[depth] in prefix_session:
            session = prefix_session[chain[depth]]
            break
    for h in chain:
        prefix_session[h] = session
    return session


def read_azure_csv(path: Path, *, name: str = "azure") -> list[WorkloadRequest]:
    """``TIMESTAMP,ContextTokens,GeneratedTokens``. No prefix information: every prompt gets unique text."""
    rows: list[tuple[datetime, int, int]] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise WorkloadFormatError(f"{path}: missing columns {sorted(missing)} (is this an Azure 2023 trace?)")
        for lineno, row in enumerate(reader, 2):
            try:
                rows.append(
                    (datetime.fromisoformat(row["TIMESTAMP"]), int(row["ContextTokens"]), int(row["GeneratedTokens"]))
                )
            except (TypeError, ValueError) as exc:
                raise WorkloadFormatError(f"{path}:{lineno}: bad Azure record ({exc})") from None
    if not rows:
        raise WorkloadFormatError(f"{path}: no records")
    start = min(r[0] for r in rows)
    return [
        WorkloadRequest(
            request_id=f"{name}-{i}",
            arrival_time=(ts - start).total_seconds(),
            prompt_tokens=max(1, context),
            output_tokens=max(1, generated),
        )
        for i, (ts, context, generated) in enumerate(rows)
    ]


def _render_messages(messages: Any) -> str:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of {role, content} objects")
    return "".join(f"{m.get('role', 'user')}: {m.get('content', '')}\n" for m in messages)


def read_jsonl(path: Path, *, name: str | None = None) -> list[WorkloadRequest]:
    """One object a line, every field optional except a prompt: ``prompt`` (text) or ``messages`` (chat, rendered
    as ``role: content`` lines) or ``prompt_tokens`` (unique synthetic text of that length); ``timestamp``
    (seconds, default 0: all at once); ``output_tokens`` or ``max_tokens`` (default 128); ``session_id``;
    ``request_id``."""
    name = name or path.stem
    out: list[WorkloadRequest] = []
    for index, (lineno, rec) in enumerate(_json_lines(path)):
        try:
            text: str | None = None
            if "prompt" in rec:
                text = str(rec["prompt"])
            elif "messages" in rec:
                text = _render_messages(rec["messages"])
            elif "prompt_tokens" not in rec:
                raise KeyError("one of prompt, messages, prompt_tokens")
            prompt_tokens = estimate_tokens(text) if text is not None else int(rec["prompt_tokens"])
            output = int(rec.get("output_tokens", rec.get("max_tokens", DEFAULT_OUTPUT_TOKENS)))
            arrival = float(rec.get("timestamp", 0.0))
            session = rec.get("session_id")
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadFormatError(f"{path}:{lineno}: bad record ({exc!r})") from None
        if prompt_tokens <= 0 or output <= 0 or arrival < 0:
            raise WorkloadFormatError(f"{path}:{lineno}: prompt and output must be non-empty, timestamp >= 0")
        out.append(
            WorkloadRequest(
                request_id=str(rec.get("request_id", f"{name}-{index}")),
                arrival_time=arrival,
                prompt_tokens=prompt_tokens,
                output_tokens=output,
                session_id=None if session is None else str(session),
                text=text,
            )
        )
    return out


def _shift(request: WorkloadRequest, start: float) -> WorkloadRequest:
    return replace(request, arrival_time=request.arrival_time - start)
