"""The learner's building blocks. Host-agnostic: nothing here imports production-stack, the simulator or torch
at module import time (torch is imported lazily, only by training code)."""
