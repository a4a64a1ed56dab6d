"""TEST DOUBLE for the full TensorRT builder's timing-cache calls, a boundary nothing here
can run: the full `tensorrt` builder needs a GPU, and TensorRT-RTX keeps these calls as
no-ops ("Deprecated in TensorRT-RTX 1.2. Timing cache operations are no-ops").

`BuilderConfigDouble` has the three IBuilderConfig methods trt_build._set_timing_cache
uses, with the bindings' names and TensorRT 10's rules:
- `create_timing_cache(serialized_timing_cache)`: b'' makes a new, empty cache ("If an
  empty cache is provided ... a new cache will be created"); bytes that are not a cache
  make an empty one too, with a warning (what TensorRT-RTX logs: "Failed to deserialize
  timing cache. Returning an empty timing cache.").
- `set_timing_cache(cache, ignore_mismatch)` returns False for a cache measured on another
  device unless ignore_mismatch ("A failure will be reported if the CUDA device property in
  the provided cache is different from current environment. bool(ignore_mismatch) == True
  skips strict verification"); `refuse_all` makes it fail for every cache.
- `get_timing_cache()` gives the cache set; its `serialize()` the bytes to store.
A serialized cache here is `DEVICE_TAG + device name + b'\\n' + entries`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEVICE_TAG = b'TIMING-CACHE-DOUBLE:'


@dataclass
class TimingCacheDouble:
    device: str
    entries: bytes = b''

    def serialize(self) -> bytes:
        return DEVICE_TAG + self.device.encode() + b'\n' + self.entries


@dataclass
class BuilderConfigDouble:
    device: str = 'this GPU'
    refuse_all: bool = False
    warnings: list[str] = field(default_factory=list)
    calls: list[tuple] = field(default_factory=list)
    cache: TimingCacheDouble | None = None

    def create_timing_cache(self, serialized_timing_cache: bytes) -> TimingCacheDouble:
        data = bytes(serialized_timing_cache)
        if data.startswith(DEVICE_TAG) and b'\n' in data:
            device, entries = data[len(DEVICE_TAG):].split(b'\n', 1)
            return TimingCacheDouble(device.decode(), entries)
        if data:
            self.warnings.append('Failed to deserialize timing cache. Returning an empty '
                                 'timing cache.')
        return TimingCacheDouble(self.device)

    def set_timing_cache(self, cache: TimingCacheDouble, ignore_mismatch: bool) -> bool:
        self.calls.append(('set_timing_cache', cache.device, ignore_mismatch))
        if self.refuse_all or (cache.device != self.device and not ignore_mismatch):
            return False
        self.cache = cache
        return True

    def get_timing_cache(self) -> TimingCacheDouble | None:
        return self.cache
