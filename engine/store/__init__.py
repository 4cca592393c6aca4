"""Where orders and their KCIs are kept. :class:`Store` is the interface every backend
implements; :class:`MemoryStore` keeps everything in this process."""

from engine.store.base import Store
from engine.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
