"""Engine model (vLLM V1 semantics with calibrated per-GPU timing), emulated engine server, virtual-time
cluster and the oracle. Imports only ``lodestar_vllm.core.types`` and ``lodestar_vllm.tokenizer`` from ours."""
