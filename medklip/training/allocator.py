"""Keep freed memory in the process, so that CPU training stops paying the kernel for every activation, every step.

glibc's malloc serves a large request (over its mmap threshold: 128 KiB at first, rising to at most 32 MiB) with a
fresh `mmap` and gives it back to the kernel with `munmap` when torch frees it. A CPU training step allocates and
frees each activation and gradient once, so every step maps them again and the kernel zero-fills every page on
first touch: 43 million page faults in 8 steps of the `base` preset at batch 48. On the 2-core development
machine the `base` step ran at 6.44 img/s with the memory kept against 3.82 without at batch 48, 6.00 against 5.47
at batch 8 (`benchmarks/train_step.py --routes`, the "freed memory kept" rows). torch's CUDA caching allocator does
the same for GPU memory; this is its CPU counterpart, done with glibc's own switches (no preloaded allocator
needed):

- `M_MMAP_MAX = 0`: no request is served by its own mapping; all come from the heap, which is reused.
- `M_TRIM_THRESHOLD` at its maximum: free memory at the heap's top is not returned to the kernel.

The cost: the process keeps its peak heap (its resident memory does not shrink between steps; at batch 48 the `base`
step holds about 8 GB instead of a fluctuating 6). DataLoader workers forked later inherit the setting.
Only glibc (Linux) has these switches; elsewhere `keep_freed_memory` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Set glibc malloc to keep freed memory for reuse (see the module text); True when it took effect."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        logger.info("no glibc malloc here (%s): the allocator keeps its own policy", name)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_MAX) == 1
    if not done:
        logger.warning("glibc refused mallopt: freed memory goes back to the kernel (slower CPU steps)")
    return done
