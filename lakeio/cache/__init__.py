"""The tiered cache: a memory tier of decoded chunks over a disk tier of chunk bytes over the origin."""

from lakeio.cache.config import Cache
from lakeio.cache.disk import DiskTier, DiskTierWarning
from lakeio.cache.memory import MemoryTier
from lakeio.cache.source import ChunkSource

__all__ = ["Cache", "ChunkSource", "DiskTier", "DiskTierWarning", "MemoryTier"]
