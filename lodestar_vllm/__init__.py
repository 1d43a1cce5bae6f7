"""lodestar-vllm: an online-learning request router for vLLM clusters."""

__version__ = "0.1.0"
