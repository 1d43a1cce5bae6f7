"""A ketama-style consistent-hash ring, as ``uhashring.HashRing`` builds it by default.

production-stack's SessionRouter uses ``uhashring.HashRing()`` (160 virtual nodes per node, md5 of
``f"{node}-{i}"`` as ring points, md5 of the key located with ``bisect`` and wrapping to 0); see
ultrabug/uhashring ``uhashring/ring_meta.py`` and ``uhashring/ring.py``. Re-implemented here (20 lines) rather than
adding a dependency the router image would also need.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Iterable
from hashlib import md5


def _point(key: str) -> int:
    return int(md5(key.encode("utf-8")).hexdigest(), 16)


class HashRing:
    def __init__(self, vnodes: int = 160) -> None:
        if vnodes <= 0:
            raise ValueError(f"vnodes must be positive, got {vnodes}")
        self.vnodes = vnodes
        self._nodes: frozenset[str] = frozenset()
        self._points: list[int] = []
        self._owner: dict[int, str] = {}

    @property
    def nodes(self) -> frozenset[str]:
        return self._nodes

    def set_nodes(self, nodes: Iterable[str]) -> None:
        wanted = frozenset(nodes)
        if wanted == self._nodes:
            return
        for node in self._nodes - wanted:
            for i in range(self.vnodes):
                self._owner.pop(_point(f"{node}-{i}"), None)
        for node in sorted(wanted - self._nodes):
            for i in range(self.vnodes):
                self._owner[_point(f"{node}-{i}")] = node
        self._nodes = wanted
        self._points = sorted(self._owner)

    def get_node(self, key: str) -> str | None:
        if not self._points:
            return None
        pos = bisect(self._points, _point(key))
        if pos == len(self._points):
            pos = 0
        return self._owner[self._points[pos]]
