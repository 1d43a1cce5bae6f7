"""Failure drills on the learner's side: the trainer dying, a corrupt checkpoint, restarts and reconfiguration."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from lodestar_vllm.integrations.production_stack import runtime as runtime_mod
from lodestar_vllm.integrations.production_stack.routing import LearnedRouter
from lodestar_vllm.policies.learned.policy import LearnedPolicy
from tests.drills.conftest import FAST_LEARNED, completion, engines, router, settled, wait_for


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _post_all(url: str, n: int, tag: str) -> list[int]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [client.post("/v1/completions", json=completion(f"{tag} {i} " * 20)).status_code for i in range(n)]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the drill kills it
def test_trainer_thread_dies_and_is_restarted() -> None:
    """Must hold: while the background trainer is dead the router keeps routing (every request served); the
    watchdog restarts it on the next sample (status and lodestar_trainer_restarts_total say so), and the restarted
    trainer fits again."""
    options = {**FAST_LEARNED, "trainer_mode": "background", "refit_every_s": 0.5}
    restarts_before = _metric("lodestar_trainer_restarts_total")
    with engines(2) as es, router([e.url for e in es], options=options) as r:
        policy = r.runtime.policy.inner  # the runtime puts outlier ejection in front of the policy
        assert isinstance(policy, LearnedPolicy)
        real_fit = policy.trainer.fit_fn
        crashed: list[int] = []

        def fit_that_kills_the_thread(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            if not crashed:
                crashed.append(1)
                raise SystemExit("drill: trainer thread killed")  # not an Exception: the thread dies
            return real_fit(*args, **kwargs)

        policy.trainer.fit_fn = fit_that_kills_the_thread
        codes = _post_all(r.url, 60, "t")
        wait_for(lambda: bool(crashed), 20, "the trainer to attempt its first fit")
        codes += _post_all(r.url, 40, "u")  # samples after the death wake the watchdog
        wait_for(lambda: policy.trainer.stats.accepted >= 1, 60, "a fit by the restarted trainer")
        wait_for(lambda: settled(r), 10, "outcomes")
        trainer = r.status()["policy_status"]["trainer"]
    assert codes == [200] * 100
    assert trainer["restarts"] >= 1 and trainer["thread_alive"], trainer
    assert _metric("lodestar_trainer_restarts_total") - restarts_before >= 1


@pytest.mark.slow
def test_corrupt_checkpoint_is_refused_kept_and_routing_falls_back(tmp_path: Path) -> None:
    """Must hold: a corrupt checkpoint does not stop the router. The refusal is counted
    (lodestar_checkpoint_refused_total); the file is kept byte-for-byte, moved aside so the router's own saves
    cannot overwrite it (nothing lost for a post-mortem); the router starts cold on the fallback, serves every
    request, and writes a valid checkpoint on shutdown that a fresh policy loads."""
    path = tmp_path / "learned.ckpt"
    corrupt = b"\x00not a checkpoint\xff" * 64
    path.write_bytes(corrupt)
    refused_before = _metric("lodestar_checkpoint_refused_total")
    with engines(2) as es:
        urls = [e.url for e in es]
        with router(urls, options=FAST_LEARNED, checkpoint_path=str(path)) as r:
            status_at_start = r.status()
            assert _metric("lodestar_checkpoint_refused_total") - refused_before == 1
            assert (tmp_path / "learned.ckpt.refused-1").read_bytes() == corrupt
            codes = _post_all(r.url, 60, "c")
            wait_for(lambda: settled(r), 10, "outcomes")
            # the background trainer fits off the request path: give it time on a busy box
            wait_for(lambda: r.runtime.policy.model is not None, 60, "a first fit after the cold start")
            trained = r.status()["policy_status"]["model"]
    assert status_at_start["policy_status"]["model"] is None
    assert status_at_start["checkpoint"]["restored"] is False, status_at_start["checkpoint"]
    assert codes == [200] * 60 and trained is not None
    assert (tmp_path / "learned.ckpt.refused-1").read_bytes() == corrupt
    fresh = LearnedPolicy(seed=1, **FAST_LEARNED)
    try:
        assert fresh.load_checkpoint(path) and fresh.model is not None
        assert fresh.model.version == trained["version"]
    finally:
        fresh.close()


@pytest.mark.slow
def test_warm_restart_and_reconfiguration_keep_the_model(tmp_path: Path) -> None:
    """Must hold: the host's dynamic reconfiguration (router singleton closed and recreated) keeps the learned
    model and writes a checkpoint; a router process started on that checkpoint routes with the model from its
    first request; a router that shuts down before it ever trained exits cleanly."""
    path = tmp_path / "learned.ckpt"
    with engines(2) as es:
        urls = [e.url for e in es]
        with router(urls, options=FAST_LEARNED, checkpoint_path=str(path)) as r:
            _post_all(r.url, 60, "w")
            wait_for(lambda: settled(r), 10, "outcomes")
            before = r.runtime.policy.model
            assert before is not None
            r.state.router.close()  # what the host's cleanup_routing_logic does on reconfiguration
            assert path.exists()
            r.state.router = LearnedRouter()  # ... and initialize_routing_logic recreates it
            assert runtime_mod.current_runtime() is r.runtime and r.runtime.policy.model is before
            assert _post_all(r.url, 5, "x") == [200] * 5
        runtime_mod.clear_runtime()
        with router(urls, options=FAST_LEARNED, checkpoint_path=str(path)) as r2:
            status = r2.status()
            assert _post_all(r2.url, 5, "y") == [200] * 5
            paths = r2.status()["policy_status"]["paths"]
        assert status["checkpoint"]["restored"] is True and status["policy_status"]["model"] is not None
        assert paths.get("model", 0) + paths.get("exploration", 0) >= 1, paths
        runtime_mod.clear_runtime()
        with router(urls, options=FAST_LEARNED, checkpoint_path=str(tmp_path / "never-trained.ckpt")) as r3:
            assert _post_all(r3.url, 3, "z") == [200] * 3
