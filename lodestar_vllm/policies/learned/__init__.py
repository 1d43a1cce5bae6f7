"""The learned router (``learned``) and its shadow variant (``learned-shadow``)."""

from lodestar_vllm.policies.learned.policy import LearnedPolicy, learned_shadow
from lodestar_vllm.policies.registry import register

register("learned", "lodestar_vllm.policies.learned:LearnedPolicy")
register("learned-shadow", "lodestar_vllm.policies.learned:learned_shadow")

__all__ = ["LearnedPolicy", "learned_shadow"]
