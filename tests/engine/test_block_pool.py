"""BlockPool against a list-based model of vLLM's free queue, under random allocate/cache/hit/free traffic."""

from __future__ import annotations

import random

import pytest

from lodestar_vllm.sim.kv_cache import BlockPool


class ListPool:
    """vLLM's FreeKVCacheBlockQueue semantics, written the slow obvious way."""

    def __init__(self, n: int) -> None:
        self.free = list(range(n))  # head = next to evict
        self.ref = [0] * n
        self.hash_of: dict[int, int] = {}
        self.cached: dict[int, int] = {}

    def allocate(self, n: int, hashes: list[int | None]) -> list[int]:
        out = []
        for i in range(n):
            b = self.free.pop(0)
            old = self.hash_of.pop(b, None)
            if old is not None:
                del self.cached[old]
            self.ref[b] = 1
            h = hashes[i]
            if h is not None and h not in self.cached:
                self.cached[h] = b
                self.hash_of[b] = h
            out.append(b)
        return out

    def hit(self, hashes: list[int]) -> list[int]:
        out = []
        for h in hashes:
            if h not in self.cached:
                break
            out.append(self.cached[h])
        for b in out:
            if self.ref[b] == 0:
                self.free.remove(b)
            self.ref[b] += 1
        return out

    def release(self, blocks: list[int]) -> None:
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                self.free.append(b)


@pytest.mark.parametrize("seed", range(5))
def test_pool_matches_the_list_model(seed: int) -> None:
    rng = random.Random(seed)
    n = 64
    pool, model = BlockPool(n), ListPool(n)
    owners: list[tuple[list[int], list[int]]] = []  # (pool blocks, model blocks)
    prefixes = [[rng.randrange(10**9) for _ in range(12)] for _ in range(4)]
    for _ in range(400):
        if owners and (rng.random() < 0.45 or pool.num_free < 20):
            mine, theirs = owners.pop(rng.randrange(len(owners)))
            pool.free(mine)
            model.release(theirs)
        else:
            chain = rng.choice(prefixes)[: rng.randint(0, 12)] + [rng.randrange(10**9) for _ in range(2)]
            hit = pool.match_prefix(chain, len(chain))
            pool.touch(hit)
            theirs_hit = model.hit(chain)
            assert hit == theirs_hit
            fresh = rng.randint(0, 2)
            hashes = chain[len(hit):] + [None] * fresh
            mine = list(hit)
            pool.allocate_and_cache(len(hashes), mine, chain, len(chain))
            theirs = theirs_hit + model.allocate(len(hashes), hashes)
            assert mine == theirs
            owners.append((mine, theirs))
        assert pool.free_order() == model.free
        assert pool.num_cached == len(model.cached)
        assert all(pool.is_cached(h) for h in model.cached)


def test_hits_on_free_blocks_keep_the_queue_bounded_and_ordered() -> None:
    pool, model = BlockPool(8), ListPool(8)
    mine = pool.match_prefix([], 0)
    pool.allocate_and_cache(4, mine, [11, 12, 13, 14], 4)
    theirs = model.allocate(4, [11, 12, 13, 14])
    for _ in range(200):  # the same prompt again and again: hits on free cached blocks, no allocation
        pool.free(mine)
        model.release(theirs)
        mine = pool.match_prefix([11, 12, 13, 14], 4)
        pool.touch(mine)
        theirs = model.hit([11, 12, 13, 14])
        assert pool.free_order() == model.free
    assert len(pool._fifo) <= 2 * 8 + 4  # stale entries are compacted away
    pool.free(mine)
    model.release(theirs)
    got: list[int] = []
    pool.allocate(8, got)
    assert got == model.allocate(8, [None] * 8)
    assert pool.num_cached == 0 and pool.num_free == 0
