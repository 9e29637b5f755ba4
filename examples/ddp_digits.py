"""A PyTorch-DDP-style training loop on scikit-learn's 8×8 digits: the code a torch user writes, on Ray workers.

    python examples/ddp_digits.py                # one process (rank 0 of 1)
    python examples/ddp_digits.py --workers 2    # 2 Ray workers (dg.distributed.launch), ~97 % test accuracy

Each rank builds the CNN, swaps its BatchNorm2d for SyncBatchNorm (statistics over the global batch, not the
rank's shard), wraps it in DistributedDataParallel (rank 0's parameters everywhere, gradients averaged by
backward), and reads its share of the training set through a DistributedSampler (a new order each epoch
with `set_epoch`). Rank 0 evaluates; the function returns what each rank returned.
"""

import argparse
import time

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F
from distgraph.datasets import digits


def make_model(channels=16):
    # (B, 64) -> (B, 1, 8, 8) -> conv/bn/relu/pool -> (B, C, 4, 4) -> conv/bn/relu -> (B, 2C·16) -> (B, 10)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1),
        nn.BatchNorm2d(2 * channels),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(2 * channels * 16, 10),
    )


def train(epochs, batch_size, lr, seed):
    """One rank's loop (also the whole run, alone): → test accuracy on rank 0, None on the others."""
    dist = dg.distributed
    dg.manual_seed(seed)
    (x, y), (xt, yt) = digits(seed)
    model = dist.DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(make_model()))
    opt = dg.optim.Adam(model.parameters(), lr=lr)
    data = dg.data.TensorDataset(dg.tensor(x), dg.tensor(y))
    sampler = dg.data.DistributedSampler(data, seed=seed)
    loader = dg.data.DataLoader(data, batch_size=batch_size // dist.get_world_size(), sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    if dist.get_rank() != 0:
        return None
    model.eval()
    with dg.no_grad():
        return float((model(dg.tensor(xt)).argmax(1).numpy() == yt).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description="A DDP-style loop (SyncBatchNorm, DistributedSampler) on digits.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (split across the workers)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="Ray workers (1: this process, no Ray)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run = (args.epochs, args.batch_size, args.lr, args.seed)
    if args.workers == 1:
        accuracy = train(*run)
    else:
        accuracy = dg.distributed.launch(train, workers=args.workers, args=run, address=args.address)[0]
    print(f"test accuracy {accuracy:.4f} on {args.workers} worker(s) ({time.perf_counter() - start:.1f} s)")
    return {"accuracy": accuracy}


if __name__ == "__main__":
    main()
