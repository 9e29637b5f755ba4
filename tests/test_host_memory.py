"""`import distgraph` keeps freed array memory in the process (host_memory.py): a loop that allocates and
frees the same large arrays stops faulting their pages in anew; `DISTGRAPH_KEEP_FREED_MEMORY=0` opts out.

Each case runs in a fresh interpreter (the setting is process-wide and glibc's thresholds move as it runs)
and counts the process's minor page faults over the loop."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")

# 32 MB arrays: at glibc's largest dynamic mmap threshold, so by default each is mapped and unmapped anew
LOOP = """
import json, resource, sys
import numpy as np
taken = None
if sys.argv[1] == "import":
    import distgraph
    from distgraph import host_memory
    taken = host_memory.keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = np.ones((512, 512), np.float32)
for _ in range(3):
    big = np.ones((8192, 1024), np.float32); del big
before = faults()
for _ in range(20):
    big = np.ones((8192, 1024), np.float32); small = x * 3; del big, small
print(json.dumps({"faults": (faults() - before) / 20, "taken": taken}))
"""


def _faults_per_iteration(how, opt_out=False):
    env = {k: v for k, v in os.environ.items() if k != "DISTGRAPH_KEEP_FREED_MEMORY"}
    if opt_out:
        env["DISTGRAPH_KEEP_FREED_MEMORY"] = "0"
    out = subprocess.run([sys.executable, "-c", LOOP, how], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_keeps_freed_arrays_mapped():
    plain = _faults_per_iteration("numpy")
    kept = _faults_per_iteration("import")
    assert kept["taken"] is True
    assert plain["faults"] > 100, plain  # the loop does fault without it (else the test proves nothing)
    assert kept["faults"] * 10 < plain["faults"], (kept, plain)


def test_opt_out_leaves_glibc_as_it_is():
    out = _faults_per_iteration("import", opt_out=True)
    assert out["taken"] is False
    assert out["faults"] > 100, out
