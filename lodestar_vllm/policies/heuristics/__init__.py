"""Faithful re-implementations of the routers people deploy instead of a learned one.

Each submodule mirrors one upstream router (its docstring names the repository, file and commit) and sees only
what that router sees in production: request text and headers, scraped engine metrics (possibly stale or
missing) and its own dispatch / first-token / outcome events. ``inflight.InFlightTracker`` is the shared
router-side load accounting; compose it (or a whole policy) rather than copying it.
"""

from lodestar_vllm.policies.registry import register

_MODULE = "lodestar_vllm.policies.heuristics"

register("roundrobin", f"{_MODULE}.roundrobin:RoundRobinPolicy")
register("session", f"{_MODULE}.session:SessionPolicy")
register("prefixaware", f"{_MODULE}.prefixaware:PrefixAwarePolicy")
register("least-request", f"{_MODULE}.load_balancing:LeastRequestPolicy")
register("least-kv", f"{_MODULE}.load_balancing:LeastKvPolicy")
register("power-of-two", f"{_MODULE}.load_balancing:PowerOfTwoPolicy")
register("aibrix-prefix-load", f"{_MODULE}.aibrix:AibrixPrefixLoadPolicy")
register("llmd-default", f"{_MODULE}.llmd:LlmdDefaultPolicy")
register("llmd-weighted", f"{_MODULE}.llmd:LlmdWeightedPolicy")
register("cache-aware", f"{_MODULE}.cache_aware:CacheAwarePolicy")
register("dynamo-cost", f"{_MODULE}.dynamo:DynamoCostPolicy")
