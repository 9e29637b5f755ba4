"""`backend.keep_freed_host_memory`: a step that allocates and frees the same big arrays faults no pages."""

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import numpy as np
from distgraph.backend import keep_freed_host_memory

def faults_per_step(steps=20):
    x = np.ones((512, 512), np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):  # an eager step's pattern: several 1 MiB temporaries, made and freed
        a = x * 2.0; b = a + x; c = np.maximum(b, 0); del a, b, c
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

faults_per_step()  # warm: the first pass grows the heap whatever the settings
default = faults_per_step()
tuned = keep_freed_host_memory()
faults_per_step()
print(default, tuned, faults_per_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_arrays_are_reused_without_page_faults():
    # a fresh interpreter: the setting is process-wide and would outlive the test in pytest's own process
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    default, tuned, after = out.stdout.split()
    assert tuned == "True"
    assert float(default) > 100  # glibc's default gives the pages back and faults them in again each step
    assert float(after) < 5
