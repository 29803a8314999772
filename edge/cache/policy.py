"""S3-FIFO (Yang et al., SOSP 2023), bounded by bytes, as the L1 and disk-index policy.

Image traffic is skewed and full of one-hit wonders (a variant asked for once and never
again). Plain LRU lets every one of them push a popular entry out; S3-FIFO keeps new
entries in a small FIFO (10 % of the budget) and moves them to the main FIFO only when
they are asked for again while there. Entries leaving the small queue unasked are
remembered in a ghost list (keys only), so an entry that comes back soon enough goes
straight to main. The main queue is a FIFO with reinsertion (a 2-bit counter per entry,
"CLOCK"), so a hit costs one integer increment and no list surgery, unlike LRU's
move-to-front. `python -m loadtests.simulate` shows it against LRU on Zipf traffic.

Deletion is lazy: a removed node stays in its deque, marked dead, until eviction reaches
it (or a compaction when dead nodes outnumber live ones).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SMALL, MAIN, DEAD = 0, 1, 2
MAX_FREQ = 3


class _Node(Generic[K, V]):
    __slots__ = ("freq", "key", "queue", "size", "value")

    def __init__(self, key: K, value: V, size: int, queue: int) -> None:
        self.key = key
        self.value = value
        self.size = size
        self.freq = 0
        self.queue = queue


class S3FIFO(Generic[K, V]):
    """A byte-bounded map with S3-FIFO admission and eviction.

    `on_evict(key, value)` is called for entries the policy pushes out (not for `pop`).
    """

    def __init__(
        self,
        capacity: int,
        *,
        small_ratio: float = 0.1,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        self.capacity = capacity
        self._small_target = int(capacity * small_ratio)
        self._on_evict = on_evict
        self._map: dict[K, _Node[K, V]] = {}
        self._small: deque[_Node[K, V]] = deque()
        self._main: deque[_Node[K, V]] = deque()
        self._ghost: OrderedDict[K, None] = OrderedDict()
        self._small_bytes = 0
        self._main_bytes = 0
        self._dead = 0

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._map))

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._small_bytes + self._main_bytes

    def get(self, key: K) -> V | None:
        node = self._map.get(key)
        if node is None:
            return None
        if node.freq < MAX_FREQ:
            node.freq += 1
        return node.value

    def peek(self, key: K) -> V | None:
        """The value without counting an access."""
        node = self._map.get(key)
        return None if node is None else node.value

    def put(self, key: K, value: V, size: int) -> bool:
        """Insert or replace; False (and nothing stored) when `size` exceeds the budget."""
        self.pop(key)
        if size > self.capacity:
            return False
        if key in self._ghost:
            del self._ghost[key]
            node = _Node(key, value, size, MAIN)
            self._main.append(node)
            self._main_bytes += size
        else:
            node = _Node(key, value, size, SMALL)
            self._small.append(node)
            self._small_bytes += size
        self._map[key] = node
        if self._small_bytes + self._main_bytes > self.capacity:
            self._evict()
        return True

    def pop(self, key: K) -> V | None:
        node = self._map.pop(key, None)
        if node is None:
            return None
        self._unlink(node)
        return node.value

    def shrink_by(self, nbytes: int) -> None:
        """Evict (as the policy chooses) until `nbytes` fewer bytes are held."""
        saved, self.capacity = self.capacity, max(0, self.size - nbytes)
        try:
            self._evict()
        finally:
            self.capacity = saved

    def clear(self) -> None:
        for key in list(self._map):
            self.pop(key)

    def _unlink(self, node: _Node[K, V]) -> None:
        if node.queue == SMALL:
            self._small_bytes -= node.size
        else:
            self._main_bytes -= node.size
        node.queue = DEAD
        self._dead += 1
        if self._dead > 1024 and self._dead > len(self._map):
            self._small = deque(n for n in self._small if n.queue != DEAD)
            self._main = deque(n for n in self._main if n.queue != DEAD)
            self._dead = 0

    def _evict(self) -> None:
        while self._small_bytes + self._main_bytes > self.capacity:
            if self._small_bytes > self._small_target or not self._main_bytes:
                self._evict_small()
            else:
                self._evict_main()

    def _evict_small(self) -> None:
        while self._small:
            node = self._small.popleft()
            if node.queue == DEAD:
                self._dead -= 1
                continue
            self._small_bytes -= node.size
            if node.freq > 0:  # asked for again while in the small queue: promote
                node.queue = MAIN
                node.freq = 0
                self._main.append(node)
                self._main_bytes += node.size
                return
            del self._map[node.key]
            node.queue = DEAD
            self._ghost[node.key] = None
            if len(self._ghost) > max(1024, len(self._map)):
                self._ghost.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(node.key, node.value)
            return

    def _evict_main(self) -> None:
        while self._main:
            node = self._main.popleft()
            if node.queue == DEAD:
                self._dead -= 1
                continue
            if node.freq > 0:
                node.freq -= 1
                self._main.append(node)
                continue
            self._main_bytes -= node.size
            del self._map[node.key]
            node.queue = DEAD
            if self._on_evict is not None:
                self._on_evict(node.key, node.value)
            return
