"""The allocator setting of the command line and the benchmarks: freed memory is reused."""

import json
import subprocess
import sys

import pytest

# Allocates and frees a 128 MiB tensor eight times; prints the minor page faults of each
# allocation (one per 4 KiB page touched for the first time).
PROBE = """
import json, resource, sys, torch
from skdistill._alloc import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(2**25)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""
PAGES = 2**27 // 4096  # pages of one 128 MiB tensor


def probe(mode):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_retained_memory_is_reused_without_page_faults():
    retained = probe("retain")
    if not retained["applied"]:
        pytest.skip("the C library is not glibc: retain_freed_memory changes nothing")
    default = probe("default")
    # glibc's default maps every block this large afresh: each allocation faults in its pages.
    assert min(default["faults"]) > 0.9 * PAGES
    # Kept for reuse, the heap grows once or twice (Python's own small allocations can move
    # the block's place) and then serves every allocation without touching new pages.
    assert sum(f > 0.5 * PAGES for f in retained["faults"]) <= 3
    assert max(retained["faults"][4:]) < 0.01 * PAGES
