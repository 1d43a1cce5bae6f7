"""Every router behind one interface (``RoutingPolicy``): the baselines and the learned router."""

from lodestar_vllm.policies.base import RoutingPolicy

__all__ = ["RoutingPolicy"]
