"""The `learned` routing logic for vLLM production-stack's router (``vllm_router``), and its activation.

Modules: ``settings`` (flags / LODESTAR_* env), ``runtime`` (the process-wide learned state, outside the
host's router singleton), ``routing`` (``LearnedRouter``, the host's RoutingInterface), ``views`` (host stats ->
candidate views), ``scraper`` (our own async scrape of vLLM's current metric names), ``lifecycle`` (one outcome
per routed attempt), ``status`` (``/lodestar/status``, ``/lodestar/explain/{request_id}``), ``compat`` (checks and
hooks on an unpatched host), ``launcher`` (``lodestar-vllm-router``), ``callbacks`` (``--callbacks`` activation).
"""

# Upstream commits whose private details (by-name imports in app.py, process_request's shape) compat.py was
# written and tested against. Other commits are checked at start-up and refused loudly when they differ.
SUPPORTED_HOST_COMMITS = ("a6c01db0",)
