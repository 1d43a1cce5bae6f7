"""A deliberately naive vLLM V1 scheduler (every running request visited every step) to check the fast one.

It follows vLLM's ``Scheduler.schedule`` literally: running requests in order, each gets
``min(uncomputed tokens, budget left)``; when blocks run out the tail of the running list is preempted; waiting
requests are admitted FCFS only when nothing was preempted; outputs are applied after scheduling.
"""

from __future__ import annotations

from collections import deque

from lodestar_vllm.sim.kv_cache import BlockPool


class RefRequest:
    def __init__(self, rid: str, prompt_len: int, max_output: int, hashes: list[int]) -> None:
        self.rid = rid
        self.prompt_len = prompt_len
        self.max_output = max_output
        self.hashes = hashes
        self.num_output = 0
        self.computed = 0
        self.blocks: list[int] = []
        self.num_hashed = 0
        self.cached = 0
        self.once = False

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output


class RefScheduler:
    def __init__(self, num_blocks: int, bs: int, budget: int, max_seqs: int, max_model_len: int) -> None:
        self.pool = BlockPool(num_blocks)
        self.bs = bs
        self.budget = budget
        self.max_seqs = max_seqs
        self.max_model_len = min(max_model_len, num_blocks * bs)
        self.waiting: deque[RefRequest] = deque()
        self.running: list[RefRequest] = []
        self.preemptions = 0
        self.hits = 0

    def add(self, rid: str, prompt_len: int, max_tokens: int, hashes: list[int]) -> None:
        self.waiting.append(RefRequest(rid, prompt_len, min(max_tokens, self.max_model_len - prompt_len), hashes))

    def _need(self, r: RefRequest, n: int) -> int:
        return -(-(r.computed + n) // self.bs) - len(r.blocks)

    def _preempt(self, r: RefRequest) -> None:
        self.pool.free(r.blocks)
        r.blocks = []
        r.computed = 0
        r.num_hashed = 0
        self.waiting.appendleft(r)
        self.preemptions += 1

    def step(self) -> tuple[int, list[str], list[str], list[str]]:
        budget = self.budget
        scheduled: list[tuple[RefRequest, int]] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            r = self.running[i]
            n = min(r.num_tokens - r.computed, budget)
            need = self._need(r, n)
            victim = None
            while need > self.pool.num_free:
                victim = self.running.pop()
                self._preempt(victim)
                preempted = True
                if victim is r:
                    break
            if victim is r:
                break
            self.pool.allocate(need, r.blocks)
            scheduled.append((r, n))
            budget -= n
            i += 1
        if not preempted:
            while self.waiting and budget > 0 and len(self.running) < self.max_seqs:
                r = self.waiting[0]
                hit = self.pool.match_prefix(r.hashes, (r.num_tokens - 1) // self.bs)
                n = min(r.num_tokens - len(hit) * self.bs, budget)
                need = -(-(len(hit) * self.bs + n) // self.bs) - len(hit)
                if need > self.pool.num_free - self.pool.count_free_among(hit):
                    break
                self.waiting.popleft()
                self.pool.touch(hit)
                r.blocks = list(hit)
                self.pool.allocate(need, r.blocks)
                r.computed = len(hit) * self.bs
                r.num_hashed = len(hit)
                if not r.once:
                    r.once = True
                    r.cached = r.computed
                    self.hits += r.computed
                self.running.append(r)
                scheduled.append((r, n))
                budget -= n
        emitted: list[str] = []
        first: list[str] = []
        finished: list[str] = []
        for r, n in scheduled:
            r.computed += n
            full = min(len(r.hashes), r.computed // self.bs)
            for j in range(r.num_hashed, full):
                self.pool.cache_block(r.blocks[j], r.hashes[j])
            r.num_hashed = max(r.num_hashed, full)
            if r.computed == r.num_tokens:
                r.num_output += 1
                emitted.append(r.rid)
                if r.num_output == 1:
                    first.append(r.rid)
                if r.num_output >= r.max_output:
                    finished.append(r.rid)
        for r, _n in scheduled:
            if r.rid in finished:
                self.running.remove(r)
                self.pool.free(r.blocks)
        return self.budget - budget, emitted, first, finished
