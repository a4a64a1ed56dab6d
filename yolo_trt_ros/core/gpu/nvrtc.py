"""Run-time compilation, caching and launching of the project's CUDA kernels (NVRTC).

Every kernel module (preprocessing, output decoding) hands its source here: NVRTC compiles
it for the GPU's architecture (or PTX for the closest one below it, for GPUs newer than
NVRTC), the code is cached in memory and on disk (~/.cache/yolo_trt_ros/kernels, keyed by
the source, the target and the NVRTC version, under the trust policy), and `launch` packs
the arguments the way cuLaunchKernel wants them. Compiling
needs no GPU, so CI checks every kernel against every target architecture.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from yolo_trt_ros.core.errors import CudaError, EngineError
from yolo_trt_ros.core.gpu.cuda import CudaRuntime, check

_LOG = logging.getLogger(__name__)

# Reading float32 or float16 tensors as float, for the kernels that take either: half ->
# float is exact; done in PTX, without cuda_fp16.h (not in every NVRTC).
FLOAT_LOADS = r'''
typedef unsigned short u16;

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ float load(const u16* p) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
    return f;
}
'''


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise CudaError(f'NVRTC bindings unavailable: {exc} (pip install cuda-python)') from exc
    return nvrtc


def compile_source(source: str, arch: str, filename: str) -> bytes:
    """source compiled for arch: 'sm_90' gives a cubin, 'compute_90' PTX. Needs no GPU.
    filename only names the program in NVRTC's messages."""
    nvrtc = _nvrtc()
    prog = check(nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
                       'nvrtcCreateProgram')
    try:
        opts = [f'--gpu-architecture={arch}'.encode(), b'--std=c++17', b'-default-device']
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            size = check(nvrtc.nvrtcGetProgramLogSize(prog), 'nvrtcGetProgramLogSize')
            log = b' ' * size
            check(nvrtc.nvrtcGetProgramLog(prog, log), 'nvrtcGetProgramLog')
            raise CudaError(f'NVRTC could not compile {filename} for {arch}: '
                            f'{log.decode(errors="replace").strip()}')
        cubin = arch.startswith('sm_')
        get_size, get = ((nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN) if cubin else
                         (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX))
        code = b' ' * check(get_size(prog), get_size.__name__)
        check(get(prog, code), get.__name__)
        return bytes(code)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def kernel_cache_dir() -> Path:
    xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(xdg) / 'yolo_trt_ros' / 'kernels'


def supported_archs() -> list[int]:
    """The SM versions this NVRTC can compile for (e.g. [75, 80, ..., 120])."""
    nvrtc = _nvrtc()
    return [int(a) for a in check(nvrtc.nvrtcGetSupportedArchs(), 'nvrtcGetSupportedArchs')]


def pick_target(compute_capability: tuple[int, int], supported: list[int]) -> str | None:
    """What to compile for a GPU: its own cubin where NVRTC supports its architecture; else
    PTX for the highest supported architecture below it (the driver JIT-compiles PTX for a
    newer GPU); None where NVRTC supports nothing at or below it (sm_70/72 with NVRTC 13)."""
    device = compute_capability[0] * 10 + compute_capability[1]
    below = [a for a in supported if a <= device]
    if not below:
        return None
    best = max(below)
    return f'sm_{best}' if best == device else f'compute_{best}'


def _cached_code(source: str, target: str, filename: str) -> bytes:
    """The compiled kernel, from the on-disk cache under the trust policy (a cubin that
    others could write would run as our code) or compiled and cached atomically."""
    from yolo_trt_ros.core.store.trust import TrustedDir

    version = check(_nvrtc().nvrtcVersion(), 'nvrtcVersion')
    key = hashlib.sha256(f'{source}{target}{version}'.encode()).hexdigest()[:24]
    cache = TrustedDir(kernel_cache_dir())
    name = f'{key}.{"cubin" if target.startswith("sm_") else "ptx"}'
    code, _why = cache.read(name)
    if code is None:
        code = compile_source(source, target, filename)
        try:
            cache.write(name, code)
        except (EngineError, OSError) as exc:  # a read-only or untrusted cache: run uncached
            _LOG.warning('kernel cache unusable (%s): compiling at every start', exc)
    return code


_FUNCTIONS: dict[tuple[str, str], dict[str, object]] = {}


def load_functions(source: str, filename: str, names: Sequence[str],
                   compute_capability: tuple[int, int]) -> dict[str, object]:
    """{name: CUfunction} for the current GPU, compiled (or read from the cache) once per
    process and target. CudaError where this NVRTC cannot produce code for the GPU: callers
    fall back to the CPU."""
    from cuda.bindings import driver

    supported = supported_archs()
    target = pick_target(compute_capability, supported)
    if target is None:
        raise CudaError(f'this NVRTC compiles for sm_{min(supported)} and newer, the GPU is '
                        f'sm_{compute_capability[0]}{compute_capability[1]} (install an NVRTC '
                        f'of CUDA 12 for it)')
    key = (hashlib.sha256(source.encode()).hexdigest(), target)
    functions = _FUNCTIONS.get(key)
    if functions is None:
        code = _cached_code(source, target, filename)
        check(CudaRuntime().rt.cudaFree(0), 'cudaFree(0)')  # make the primary context current
        module = check(driver.cuModuleLoadData(code), 'cuModuleLoadData')
        functions = _FUNCTIONS[key] = {
            name: check(driver.cuModuleGetFunction(module, name.encode()),
                               f'cuModuleGetFunction({name})')
            for name in names}
    return functions


def launch(function, grid: tuple[int, int, int], block: tuple[int, int, int], args: Sequence,
           stream: int) -> None:
    """Queue function on stream; args are numpy scalars of the kernel's parameter types."""
    from cuda.bindings import driver

    holders = [np.array([a]) for a in args]  # kept alive until cuLaunchKernel has read them
    pointers = np.array([h.ctypes.data for h in holders], dtype=np.uint64)
    check(driver.cuLaunchKernel(function, *grid, *block, 0, stream,
                                       pointers.ctypes.data, 0), 'cuLaunchKernel')
