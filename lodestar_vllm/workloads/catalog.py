"""Named workloads and how a name (or a path) becomes a list of requests.

A name may carry parameter overrides: ``prefix-sharing:sharing=0.3,rate=12,cv=3``. Unknown names or keys fail
with the accepted ones listed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from lodestar_vllm.workloads import readers
from lodestar_vllm.workloads.fitted import TRACE_LIKE
from lodestar_vllm.workloads.multi_round_qa import MultiRoundQAParams, generate_multi_round_qa
from lodestar_vllm.workloads.prefix_sharing import PrefixSharingParams, generate_prefix_sharing
from lodestar_vllm.workloads.trace_like import generate_trace_like
from lodestar_vllm.workloads.types import WorkloadRequest

REPO_ROOT = Path(__file__).resolve().parents[2]
MOONCAKE_JITTER_S = 3.0  # Mooncake timestamps come in ~3 s buckets: spread each bucket when replaying

# generator(params, seed=, horizon=, count=) -> requests (horizon/count in trace time, before rate_scale)
Generator = Callable[..., list[WorkloadRequest]]


class UnknownWorkloadError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    description: str
    generator: Generator | None = None
    params: Any = None  # the generator's params dataclass instance (defaults of this name)
    trace: tuple[str, ...] | None = None  # path under the shared folder
    default_jitter: float = 0.0


def shared_root() -> Path:
    """Public traces live outside the repository: ``$LODESTAR_SHARED`` or ``<repo>/../shared``."""
    env = os.environ.get("LODESTAR_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def _prefix_sharing(description: str, **overrides: Any) -> WorkloadEntry:
    return WorkloadEntry(description, generate_prefix_sharing, replace(PrefixSharingParams(), **overrides))


CATALOG: dict[str, WorkloadEntry] = {
    "prefix-sharing": _prefix_sharing("synthetic: 50% of prompt tokens a group's shared prefix, 1k-8k prompts"),
    **{
        f"prefix-sharing-{pct}": _prefix_sharing(f"synthetic prefix sharing at {pct}%", sharing=pct / 100)
        for pct in (0, 10, 30, 50, 70)
    },
    "prefix-sharing-bursty": _prefix_sharing("prefix-sharing with bursty arrivals (inter-arrival cv 3)", cv=3.0),
    "multi-round-qa": WorkloadEntry(
        "production-stack multi-round QA: users x rounds, shared system prompt, growing history",
        generate_multi_round_qa,
        MultiRoundQAParams(),
    ),
    "multi-round-qa-sharegpt": WorkloadEntry(
        "multi-round-qa with ShareGPT question/answer lengths (answers capped at 100 tokens, as the original)",
        generate_multi_round_qa,
        MultiRoundQAParams(lengths="sharegpt"),
    ),
    **{
        name: WorkloadEntry(f"synthetic, fitted to {fit.source}: {fit.summary}", generate_trace_like, fit)
        for name, fit in TRACE_LIKE.items()
    },
    "mooncake-conversation": WorkloadEntry(
        "Mooncake FAST'25 conversation trace (12,031 requests, ~1 h)",
        trace=("data", "traces", "mooncake", "conversation_trace.jsonl"),
        default_jitter=MOONCAKE_JITTER_S,
    ),
    "azure-code": WorkloadEntry(
        "Azure LLM inference trace 2023, code (8,819 requests, ~1 h)",
        trace=("data", "traces", "azure2023", "AzureLLMInferenceTrace_code.csv"),
    ),
    "azure-conv": WorkloadEntry(
        "Azure LLM inference trace 2023, conversation (19,366 requests, ~1 h)",
        trace=("data", "traces", "azure2023", "AzureLLMInferenceTrace_conv.csv"),
    ),
}
_PREFIX_SHARING_PCT = re.compile(r"prefix-sharing-(\d{1,2})")


def workload_names() -> list[str]:
    return list(CATALOG)


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _with_overrides(params: Any, overrides: str, name: str) -> Any:
    accepted = [f.name for f in fields(params)]
    changes: dict[str, Any] = {}
    for item in filter(None, overrides.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in accepted:
            raise UnknownWorkloadError(f"{name}: bad parameter {item!r}; accepted: {', '.join(accepted)}")
        default = getattr(params, key)
        parsed = _parse_value(value.strip())
        changes[key] = float(parsed) if isinstance(default, float) and isinstance(parsed, int) else parsed
    try:
        result = replace(params, **changes)
        result.validate()
    except (TypeError, ValueError) as exc:
        raise UnknownWorkloadError(f"{name}: {exc}") from None
    return result


def resolve(name_or_path: str) -> tuple[str, WorkloadEntry]:
    """The catalog entry for a name (with overrides applied) or for a trace file path."""
    name, _, overrides = name_or_path.partition(":")
    entry = CATALOG.get(name)
    if entry is None and (match := _PREFIX_SHARING_PCT.fullmatch(name)):
        entry = _prefix_sharing(f"synthetic prefix sharing at {match[1]}%", sharing=int(match[1]) / 100)
    if entry is None:
        path = Path(name_or_path)
        if path.is_file():
            return path.stem, WorkloadEntry(f"trace file {path}", trace=(str(path.resolve()),))
        raise UnknownWorkloadError(
            f"unknown workload {name_or_path!r}: not a file, and not one of {', '.join(workload_names())} "
            "(prefix-sharing-<percent> works for any percent; add :key=value,... to change a generator's parameters)"
        )
    if overrides:
        if entry.params is None:
            raise UnknownWorkloadError(f"{name}: a trace takes no parameters")
        entry = replace(entry, params=_with_overrides(entry.params, overrides, name))
    return name, entry


def trace_path(entry: WorkloadEntry) -> Path:
    assert entry.trace is not None
    if len(entry.trace) == 1:
        return Path(entry.trace[0])
    path = shared_root().joinpath(*entry.trace)
    if not path.is_file():
        raise FileNotFoundError(
            f"trace {path} is absent: public traces are not shipped with the package. Point LODESTAR_SHARED at "
            "the folder holding data/traces/ (see docs/workloads.md), or use a synthetic look-alike "
            "(mooncake-like, azure-code-like, azure-conv-like)"
        )
    return path


def read_trace(path: Path, name: str) -> tuple[list[WorkloadRequest], float]:
    """Requests of a trace file and the jitter its timestamps call for by default."""
    if path.suffix == ".csv":
        return readers.read_azure_csv(path, name=name), 0.0
    if readers.is_mooncake(path):
        return readers.read_mooncake(path, name=name), MOONCAKE_JITTER_S
    return readers.read_jsonl(path, name=name), 0.0
