"""The allocator settings of skdistill._alloc: freed memory is reused, and given back."""

import json
import os
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


# Faults of a 128 MiB allocation: five times inside a keep_freed_memory block, then twice
# after it; with the resident memory before and after the exit.
SCOPED = """
import json, os, resource, sys, torch
from skdistill import _alloc

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(2**25)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

out = {"inside": []}
with _alloc.keep_freed_memory() as in_force:
    out["in_force"] = in_force
    with _alloc.keep_freed_memory():
        out["inside"] += [faults()]
    out["inside"] += [faults() for _ in range(4)]  # the inner exit restores nothing
    big = torch.ones(2**26); big += 1; del big  # 256 MiB freed into the heap
    out["rss_in"] = rss_kb()
out["rss_out"] = rss_kb()
out["after"] = [faults(), faults()]
print(json.dumps(out))
"""


def scoped_probe(env=None):
    out = subprocess.run([sys.executable, "-c", SCOPED], capture_output=True, text=True,
                         check=True, timeout=300, env=env).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def glibc():
    if not sys.platform.startswith("linux") or not probe("retain")["applied"]:
        pytest.skip("glibc's malloc only")


def test_keep_freed_memory_applies_inside_the_block_and_restores_after(glibc):
    out = scoped_probe()
    assert out["in_force"]
    # the heap grows a few times (as in the test above), then serves without new pages
    assert sum(f > 0.5 * PAGES for f in out["inside"]) <= 3
    assert out["inside"][-1] < 0.01 * PAGES
    # after the outermost exit glibc maps large blocks afresh again ...
    assert min(out["after"]) > 0.9 * PAGES
    # ... and the 256 MiB freed inside went back to the system
    assert out["rss_in"] - out["rss_out"] > 200 * 1024


def test_an_allocator_tuned_in_the_environment_is_left_alone(glibc):
    env = {**os.environ, "MALLOC_MMAP_MAX_": "65536"}
    out = scoped_probe(env=env)
    assert not out["in_force"]
    assert min(out["inside"]) > 0.9 * PAGES  # the user's setting (glibc's default) holds
    assert json.loads(subprocess.run(
        [sys.executable, "-c", PROBE, "retain"], capture_output=True, text=True, check=True,
        timeout=120, env=env).stdout)["applied"] is False
