"""Model sharing across router replicas against the real-HTTP API stand-in: Lease election and handover,
ConfigMap publishing, followers hot-loading, the 1 MiB ConfigMap cap, API errors and restarts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from lodestar_vllm.integrations.kubernetes.backoff import Backoff
from lodestar_vllm.integrations.kubernetes.lease import LeaseElector
from lodestar_vllm.integrations.kubernetes.model_board import (
    CONFIGMAP_LIMIT_BYTES,
    CheckpointTooLarge,
    ConfigMapModelBoard,
    CorruptRecord,
)
from lodestar_vllm.integrations.kubernetes.replica import SharedModelReplica
from lodestar_vllm.integrations.kubernetes.sharing import ModelRecord, SharingConfig, SharingCore
from tests.k8s.conftest import ApiServer, wait_until
from tests.k8s.toy_learner import ToyLearner

NS = "router"
FAST = SharingConfig(candidate_interval_s=0.2, publish_interval_s=0.2, candidate_ttl_s=30.0)


def fast_backoff() -> Backoff:
    return Backoff(initial_s=0.05, maximum_s=0.3, seed=3)


def elector(api_client: client.ApiClient, identity: str) -> LeaseElector:
    # The library's minimums: retry >= 1 s, renew deadline > 1.2 x retry, lease > renew deadline.
    return LeaseElector(api_client, NS, "lodestar-model-publisher", identity, lease_duration_s=2,
                        renew_deadline_s=1.5, retry_period_s=1.0, backoff=fast_backoff)


async def background_trainer(learner: ToyLearner) -> None:
    while True:  # the learned policy's trainer refits on its replay window in the background
        learner.fit()
        await asyncio.sleep(0.05)


@asynccontextmanager
async def replica(apiserver: ApiServer, name: str, learner: ToyLearner, *, volume: Path | None = None,
                  start: bool = True) -> AsyncIterator[SharedModelReplica]:
    trainer = asyncio.create_task(background_trainer(learner))
    async with apiserver.api_client() as api_client:
        core = SharingCore(name, learner.export, learner.import_, validation_loss=learner.validation_loss,
                           config=FAST)
        board = ConfigMapModelBoard(api_client, NS, volume_dir=volume, request_timeout_s=2.0)
        shared = SharedModelReplica(core, board, elector(api_client, name), tick_s=0.1, watch_timeout_s=5.0,
                                    backoff=fast_backoff)
        if start:
            await shared.start()
        try:
            yield shared
        finally:
            trainer.cancel()
            await shared.close(release=False)


def leaders(*replicas: SharedModelReplica) -> list[str]:
    return [r.core.replica_id for r in replicas if r.elector.is_leader]


def shared_has(learner: ToyLearner, ids: set[str]) -> Callable[[], bool]:
    return lambda: ids <= learner.trained


async def test_one_leader_publishes_and_a_follower_loads_newer_models(apiserver: ApiServer) -> None:
    la, lb = ToyLearner(), ToyLearner()
    la.observe("a-1")
    async with replica(apiserver, "router-a", la) as a:
        await wait_until(lambda: a.elector.is_leader, timeout_s=10, what="router-a to take the lease")
        async with replica(apiserver, "router-b", lb) as b:
            lb.observe("b-1")
            # b's outcome reaches the shared model through b's candidate, and a loads it back.
            await wait_until(shared_has(la, {"a-1", "b-1"}), timeout_s=10, what="a to load b's outcomes")
            await wait_until(shared_has(lb, {"a-1", "b-1"}), timeout_s=10, what="b to hold a's outcomes")
            assert leaders(a, b) == ["router-a"]
            assert a.core.stats.publishes >= 1 and b.core.stats.publishes == 0
            lb.observe("b-2")
            await wait_until(shared_has(la, {"b-2"}), timeout_s=10, what="a newer version to reach a")
            assert b.core.loaded_version >= 1 and a.core.loaded_version >= 2
            assert b.stats.follow_errors == 0 and a.stats.tick_errors == 0


async def test_leader_change_hands_over_publishing_with_monotonic_versions(
    apiserver: ApiServer, api: client.ApiClient
) -> None:
    la, lb = ToyLearner(), ToyLearner()
    la.observe("a-1")
    async with replica(apiserver, "router-a", la) as a, replica(apiserver, "router-b", lb) as b:
        await wait_until(lambda: len(leaders(a, b)) == 1, timeout_s=10, what="one leader")
        first, second = (a, b) if a.elector.is_leader else (b, a)
        await wait_until(lambda: second.core.loaded_version >= 1, timeout_s=10, what="the first publish")
        version_before = second.core.loaded_version

        await first.close(release=False)  # a crash: the lease must expire before the other takes over
        await wait_until(lambda: second.elector.is_leader, timeout_s=15, what="the lease to move on expiry")
        learner = la if second is a else lb
        learner.observe("after-handover")
        board = ConfigMapModelBoard(api, NS)
        await wait_until(lambda: second.core.stats.publishes >= 1, timeout_s=10, what="the new leader to publish")
        stored = await board.read_shared()
        assert stored is not None and stored.version > version_before
        assert stored.replica == second.core.replica_id


async def test_clean_shutdown_releases_the_lease_at_once(apiserver: ApiServer) -> None:
    async with apiserver.api_client() as api_client:
        a, b = elector(api_client, "router-a"), elector(api_client, "router-b")
        await a.start()
        await wait_until(lambda: a.is_leader, timeout_s=10, what="a to lead")
        await b.start()
        await wait_until(lambda: b.terms == 0 and not b.is_leader, timeout_s=2, what="b to follow")
        await a.close(release=True)
        # Released: b takes over within a retry period or two, not after waiting out the lease.
        await wait_until(lambda: b.is_leader, timeout_s=4, what="b to take the released lease")
        await b.close()
        with pytest.raises(ValueError):
            LeaseElector(api_client, NS, "x", "y", lease_duration_s=1, renew_deadline_s=2.0)


async def test_checkpoint_over_the_configmap_cap_goes_to_the_shared_volume(
    apiserver: ApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    board = ConfigMapModelBoard(api, NS, volume_dir=tmp_path)
    big = os.urandom(CONFIGMAP_LIMIT_BYTES + 300_000)  # incompressible: stays above the cap after zlib
    record = ModelRecord.of(big, version=1, replica="router-a", created_at=1.0)
    assert await board.publish(record)
    stored = await client.CoreV1Api(api).read_namespaced_config_map(board.shared_name, NS)
    assert stored.data["location"] == "volume" and not stored.binary_data
    assert [p.name for p in tmp_path.iterdir()] == [stored.data["path"]]
    follower = ConfigMapModelBoard(api, NS, volume_dir=tmp_path)
    loaded = await follower.read_shared()
    assert loaded is not None and loaded.payload == big and loaded.version == 1

    # Just under the inline budget: stored in the ConfigMap itself, and the API accepts it.
    near_cap = os.urandom(board.max_inline_bytes - 2048)
    assert await board.publish(ModelRecord.of(near_cap, version=2, replica="router-a", created_at=1.5))
    stored = await client.CoreV1Api(api).read_namespaced_config_map(board.shared_name, NS)
    assert stored.data["location"] == "inline"
    assert (await follower.read_shared()).payload == near_cap  # type: ignore[union-attr]

    # A small model goes back inline, and the stale pointer is not followed.
    small = ModelRecord.of(b"small" * 100, version=3, replica="router-a", created_at=2.0)
    assert await board.publish(small)
    loaded = await follower.read_shared()
    assert loaded is not None and loaded.payload == small.payload

    # Without a volume the oversized checkpoint is refused before anything is written.
    no_volume = ConfigMapModelBoard(api, NS)
    with pytest.raises(CheckpointTooLarge):
        await no_volume.publish(ModelRecord.of(big, version=4, replica="router-a", created_at=3.0))
    assert (await follower.read_shared()).version == 3  # type: ignore[union-attr]


async def test_compressible_checkpoints_are_compressed_and_compressed_ones_stored_as_is(
    api: client.ApiClient,
) -> None:
    board = ConfigMapModelBoard(api, NS)
    core = client.CoreV1Api(api)
    text_like = b"0.125," * 100_000  # 600 kB that zlib shrinks a lot
    assert await board.publish(ModelRecord.of(text_like, version=1, replica="a", created_at=1.0))
    stored = await core.read_namespaced_config_map(board.shared_name, NS)
    assert stored.data["encoding"] == "zlib" and len(stored.binary_data["checkpoint.bin"]) < 20_000
    random_bytes = os.urandom(100_000)  # like the learned policy's own (already zlib'd) checkpoint
    assert await board.publish(ModelRecord.of(random_bytes, version=2, replica="a", created_at=2.0))
    stored = await core.read_namespaced_config_map(board.shared_name, NS)
    assert stored.data["encoding"] == "identity"
    assert (await board.read_shared()).payload == random_bytes  # type: ignore[union-attr]


async def test_the_stand_in_enforces_the_cap_that_the_board_respects(api: client.ApiClient) -> None:
    # Guards the guard: if the board ever wrote an oversized ConfigMap, the API would refuse it.
    body = {"metadata": {"name": "too-big"}, "binaryData": {"x": "A" * (CONFIGMAP_LIMIT_BYTES * 2)}}
    with pytest.raises(client.ApiException) as error:
        await client.CoreV1Api(api).create_namespaced_config_map(NS, body)
    assert error.value.status == 422


async def test_versions_only_move_forward_and_corrupt_records_are_skipped(api: client.ApiClient) -> None:
    board = ConfigMapModelBoard(api, NS)
    assert await board.publish(ModelRecord.of(b"v2", version=2, replica="a", created_at=1.0))
    assert not await board.publish(ModelRecord.of(b"v1", version=1, replica="b", created_at=2.0))
    assert not await board.publish(ModelRecord.of(b"v2'", version=2, replica="b", created_at=2.0))
    assert board.stats.conflicts == 2
    core = client.CoreV1Api(api)
    await core.patch_namespaced_config_map(board.shared_name, NS, {"data": {"digest": "0" * 64}})
    with pytest.raises(CorruptRecord):
        await board.read_shared()
    assert board.stats.corrupt == 1


async def test_concurrent_leaders_cannot_both_publish_a_version(apiserver: ApiServer) -> None:
    # Split brain for a moment (an old leader past its deadline, a new one just elected): both read v1 and
    # write v2. The resourceVersion read with v1 makes the slower write fail with 409 instead of overwriting.
    async with apiserver.api_client() as one, apiserver.api_client() as two:
        first, second = ConfigMapModelBoard(one, NS), ConfigMapModelBoard(two, NS)
        assert await first.publish(ModelRecord.of(b"v1", version=1, replica="a", created_at=1.0))
        results = await asyncio.gather(
            first.publish(ModelRecord.of(b"v2-from-a", version=2, replica="a", created_at=2.0)),
            second.publish(ModelRecord.of(b"v2-from-b", version=2, replica="b", created_at=2.0)),
        )
        assert sorted(results) == [False, True]
        assert first.stats.conflicts + second.stats.conflicts == 1
        stored = await first.read_shared()
        winner = "a" if results[0] else "b"
        assert stored is not None and stored.version == 2 and stored.replica == winner


async def test_api_errors_and_restart_are_survived(apiserver: ApiServer) -> None:
    la, lb = ToyLearner(), ToyLearner()
    la.observe("a-1")
    async with replica(apiserver, "router-a", la) as a:
        await wait_until(lambda: a.elector.is_leader and a.core.stats.publishes >= 1, timeout_s=10,
                         what="a to lead and publish")
        async with replica(apiserver, "router-b", lb) as b:
            await wait_until(shared_has(lb, {"a-1"}), timeout_s=10, what="b to load the first model")
            # ConfigMap writes fail for a while: counted, retried, nothing lost.
            apiserver.emulator.inject_errors(
                6, status=500, predicate=lambda r: r.method in ("PUT", "POST") and "/configmaps" in r.path
            )
            la.observe("a-2")
            await wait_until(shared_has(lb, {"a-2"}), timeout_s=15, what="a-2 to reach b despite 500s")
            assert a.stats.tick_errors + b.stats.tick_errors >= 1

            await apiserver.restart(downtime_s=0.5)  # watches drop, requests fail while it is down
            la.observe("a-3")
            await wait_until(shared_has(lb, {"a-3"}), timeout_s=20, what="a-3 to reach b after the restart")
            assert leaders(a, b) in (["router-a"], ["router-b"])


async def test_a_corrupt_shared_model_is_replaced_not_fatal(apiserver: ApiServer, api: client.ApiClient) -> None:
    la, lb = ToyLearner(), ToyLearner()
    la.observe("a-1")
    async with replica(apiserver, "router-a", la) as a:
        await wait_until(lambda: a.core.stats.publishes >= 1, timeout_s=10, what="a first publish")
        async with replica(apiserver, "router-b", lb) as b:
            await wait_until(shared_has(lb, {"a-1"}), timeout_s=10, what="b to load the first model")
            board = ConfigMapModelBoard(api, NS)
            bad_version = (await board.stored_version() or 0) + 5
            # Someone (an old router version, a hand edit) leaves an unreadable shared model behind.
            await client.CoreV1Api(api).patch_namespaced_config_map(
                board.shared_name, NS, {"data": {"digest": "0" * 64, "version": str(bad_version)}})
            la.observe("a-2")
            await wait_until(shared_has(lb, {"a-2"}), timeout_s=10, what="a readable model above the corrupt one")
            stored = await board.read_shared()
            assert stored is not None and stored.version > bad_version
            assert b.stats.follow_errors == 0 and a.stats.tick_errors == 0


async def test_refusals_are_counted_not_fatal(apiserver: ApiServer) -> None:
    la, lb = ToyLearner(), ToyLearner(refuse=True)
    la.observe("a-1")
    async with replica(apiserver, "router-a", la) as a:
        await wait_until(lambda: a.elector.is_leader, timeout_s=10, what="router-a to lead")
        async with replica(apiserver, "router-b", lb) as b:
            await wait_until(lambda: b.core.stats.refusals >= 1, timeout_s=10, what="b to refuse a version")
            la.observe("a-2")
            await wait_until(lambda: b.core.stats.refusals >= 2, timeout_s=10, what="b to refuse the next one")
            assert b.stats.follow_errors == 0 and lb.imports == 0
            assert a.core.stats.publishes >= 2
