"""Where orders and their KCIs are kept. :class:`Store` is the interface every backend
implements; :class:`MemoryStore` keeps everything in this process."""

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
