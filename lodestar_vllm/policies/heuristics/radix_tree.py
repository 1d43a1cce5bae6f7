"""SGLang's approximate multi-tenant radix tree over request text (characters, not tokens).

Mirrors sgl-project/sglang ``sgl-router/src/policies/tree.rs`` (commit 4d40eec0; the same tree ships in
vllm-project/router): nodes hold text, every node remembers the tenants (worker urls) that were sent text
through it with a last-access stamp, each tenant's character count is maintained, and eviction removes a
tenant's least-recently-used leaves until its count is at most ``max_size``.

Deviations: access stamps are a logical clock (upstream uses wall-clock milliseconds, whose ties it breaks
arbitrarily); "the first tenant" of a node, which upstream takes in DashMap's arbitrary order, is the tenant that
reached it first; string comparisons use ``str.startswith`` with an offset so no suffix is copied per node.
"""

from __future__ import annotations

import heapq
import itertools


class _Node:
    __slots__ = ("text", "children", "tenants", "parent")

    def __init__(self, text: str, parent: _Node | None) -> None:
        self.text = text
        self.children: dict[str, _Node] = {}
        self.tenants: dict[str, int] = {}  # tenant -> last access stamp
        self.parent = parent


def _shared_prefix_len(node_text: str, text: str, start: int) -> int:
    """Length of the common prefix of ``node_text`` and ``text[start:]`` (binary search on C compares)."""
    if text.startswith(node_text, start):
        return len(node_text)
    lo, hi = 0, min(len(node_text), len(text) - start)
    while lo < hi:  # invariant: node_text[:lo] matches
        mid = (lo + hi + 1) // 2
        if text.startswith(node_text[:mid], start):
            lo = mid
        else:
            hi = mid - 1
    return lo


class RadixTree:
    def __init__(self) -> None:
        self.root = _Node("", None)
        self.char_count: dict[str, int] = {}
        self._clock = itertools.count(1)

    def add_tenant(self, tenant: str) -> None:
        """Register a tenant with no text (upstream's ``insert("", url)`` at worker registration)."""
        self.root.tenants[tenant] = next(self._clock)
        self.char_count.setdefault(tenant, 0)

    def insert(self, text: str, tenant: str) -> None:
        stamp = next(self._clock)
        self.root.tenants[tenant] = stamp
        counts = self.char_count
        counts.setdefault(tenant, 0)
        node = self.root
        idx, n = 0, len(text)
        while idx < n:
            child = node.children.get(text[idx])
            if child is None:
                new = _Node(text[idx:], node)
                new.tenants[tenant] = stamp
                node.children[text[idx]] = new
                counts[tenant] += n - idx
                return
            shared = _shared_prefix_len(child.text, text, idx)
            if shared < len(child.text):
                # split: node -> [head: shared part] -> [child: the rest]
                head = _Node(child.text[:shared], node)
                head.tenants = dict(child.tenants)
                child.text = child.text[shared:]
                child.parent = head
                head.children[child.text[0]] = child
                node.children[text[idx]] = head
                child = head
            if tenant not in child.tenants:
                counts[tenant] += len(child.text)
            child.tenants[tenant] = stamp
            node = child
            idx += shared

    def prefix_match(self, text: str) -> tuple[int, str | None]:
        """(matched characters, a tenant holding the deepest node reached); refreshes that tenant's path."""
        node = self.root
        idx, n = 0, len(text)
        while idx < n:
            child = node.children.get(text[idx])
            if child is None:
                break
            shared = _shared_prefix_len(child.text, text, idx)
            idx += shared
            node = child
            if shared < len(child.text):
                break
        tenant = next(iter(node.tenants), None)
        if tenant is not None:
            stamp = next(self._clock)
            walk: _Node | None = node
            while walk is not None:
                walk.tenants[tenant] = stamp
                walk = walk.parent
        return idx, tenant

    def smallest_tenant(self) -> str | None:
        best, best_count = None, None
        for tenant, count in self.char_count.items():
            if best_count is None or count < best_count:
                best, best_count = tenant, count
        return best

    def evict_tenant_by_size(self, max_size: int) -> None:
        """Remove each oversized tenant's least-recently-used leaves until it holds at most ``max_size`` chars."""
        counts = self.char_count
        if all(c <= max_size for c in counts.values()):
            return
        heap: list[tuple[int, int, str, _Node]] = []
        order = itertools.count()
        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            for tenant in self._leaf_tenants(node):
                if counts.get(tenant, 0) > max_size:
                    heap.append((node.tenants[tenant], next(order), tenant, node))
        heapq.heapify(heap)
        while heap:
            _, _, tenant, node = heapq.heappop(heap)
            if counts.get(tenant, 0) <= max_size or tenant not in node.tenants or node is self.root:
                continue
            self._remove_from_node(node, tenant)
            parent = node.parent
            if parent is not None and parent is not self.root and tenant in self._leaf_tenants(parent):
                heapq.heappush(heap, (parent.tenants[tenant], next(order), tenant, parent))

    def remove_tenant(self, tenant: str) -> None:
        stack = [self.root]
        nodes = []
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            if tenant in node.tenants:
                nodes.append(node)
        for node in reversed(nodes):  # children before parents (DFS pre-order reversed)
            if node is self.root:
                node.tenants.pop(tenant, None)
            else:
                self._remove_from_node(node, tenant)
        self.char_count.pop(tenant, None)

    def node_count(self) -> int:
        count, stack = 0, [self.root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children.values())
        return count

    def _leaf_tenants(self, node: _Node) -> list[str]:
        below = set()
        for child in node.children.values():
            below.update(child.tenants)
        return [t for t in node.tenants if t not in below]

    def _remove_from_node(self, node: _Node, tenant: str) -> None:
        if node.tenants.pop(tenant, None) is not None and tenant in self.char_count:
            self.char_count[tenant] = max(self.char_count[tenant] - len(node.text), 0)
        if not node.children and not node.tenants and node.parent is not None:
            node.parent.children.pop(node.text[0], None)
