"""Host adapters (floor 3): ``production_stack`` (the `learned` routing logic inside vLLM production-stack's
router) and ``kubernetes`` (hardware discovery and model sharing). The learner never imports these."""
