"""The local Trainer's samples/s and minor page faults per step on `bench scaling`'s MLP (256-512-512-10,
batch 512, one BLAS thread): what `host_memory.py`'s allocator settings are worth. Compare
`python tools/local_trainer_rate.py` with `DISTGRAPH_KEEP_FREED_MEMORY=0 python tools/local_trainer_rate.py`."""

import os
import resource

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import distgraph as dg  # noqa: E402
import distgraph.nn.functional as F  # noqa: E402
from distgraph.bench.scaling import _mlp  # noqa: E402

STEPS, BATCH = 40, 512


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH * STEPS, 256), dtype=np.float32)
    y = rng.integers(0, 10, len(x))
    model = _mlp([256, 512, 512, 10], 0)
    trainer = dg.Trainer(model, F.cross_entropy, dg.optim.SGD(model.parameters(), lr=0.01), progress=False)
    trainer.fit((x, y), epochs=1, batch_size=BATCH)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    history = trainer.fit((x, y), epochs=3, batch_size=BATCH)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (3 * STEPS)
    rates = [round(e["samples_per_s"]) for e in history.epochs]
    kept = os.environ.get("DISTGRAPH_KEEP_FREED_MEMORY", "1") != "0"
    print(f"freed memory kept: {kept}; samples/s per epoch {rates}; minor page faults per step {faults:.0f}")


if __name__ == "__main__":
    main()
