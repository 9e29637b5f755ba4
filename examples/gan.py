"""A GAN on a 2-D mixture of 8 Gaussians on a ring: generator and discriminator trained together.

Two models, two Adam optimizers, alternating updates: the discriminator learns to tell real samples
from generated ones (binary cross-entropy with logits), then the generator learns to fool it. Success
is measured, not eyeballed: the share of generated points within 3σ of a mode ("quality") and how
many of the 8 modes receive at least 2% of them ("modes covered").

    python examples/gan.py               # 3,000 steps, ~13 s on 2 cores
    python examples/gan.py --workers 2   # the same loop on 2 Ray workers (dg.distributed.launch)

With `--workers N` the loop is the same, as with Horovod: every rank starts from rank 0's parameters
(`broadcast_parameters`), draws its own share of each batch, and both optimizers average the gradients
across the ranks before they step (`DistributedOptimizer`).
"""

import argparse
import math

import numpy as np

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F

MODES, RADIUS, SIGMA = 8, 2.0, 0.05


def real_batch(rng, n):
    centers = np.array(
        [[RADIUS * math.cos(2 * math.pi * k / MODES), RADIUS * math.sin(2 * math.pi * k / MODES)] for k in range(MODES)]
    )
    return (centers[rng.integers(0, MODES, n)] + SIGMA * rng.standard_normal((n, 2))).astype(np.float32), centers


def mlp(sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def evaluate(generator, centers, n=2000, noise_dim=8):
    with dg.no_grad():
        fake = generator(dg.randn(n, noise_dim)).numpy()
    dist = np.linalg.norm(fake[:, None, :] - centers[None], axis=2)  # (n, MODES)
    nearest, d = dist.argmin(1), dist.min(1)
    good = d < 3 * SIGMA
    share = np.bincount(nearest[good], minlength=MODES) / n
    return {"quality": float(good.mean()), "modes_covered": int((share >= 0.02).sum())}


def main(argv=None):
    parser = argparse.ArgumentParser(description="GAN on a ring of 8 Gaussians.")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch (split across the workers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="Ray workers (1: this process, no Ray)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: a local one)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.workers == 1:
        result = train(args)
    else:
        result = dg.distributed.launch(train, workers=args.workers, args=(args,), address=args.address)[0]
    print(f"final: quality {result['quality']:.2f}, modes covered {result['modes_covered']}/{MODES}")
    return result


def train(args):
    """The training loop, on one rank of `dg.distributed.world_size()` (1 outside a launch)."""
    dist = dg.distributed
    rank, world = dist.rank(), dist.world_size()
    dg.manual_seed(args.seed)
    noise_dim, batch = 8, args.batch_size // world
    generator = mlp([noise_dim, 128, 128, 2])  # (B, 8) -> (B, 2)
    discriminator = mlp([2, 128, 128, 1])  # (B, 2) -> (B, 1) logits
    dist.broadcast_parameters(generator)
    dist.broadcast_parameters(discriminator)
    dg.manual_seed(args.seed + rank)  # each rank its own noise ...
    rng = np.random.default_rng([args.seed, rank])  # ... and its own real samples
    opt_g = dist.DistributedOptimizer(dg.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.999)))
    opt_d = dist.DistributedOptimizer(dg.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.5, 0.999)))
    ones, zeros = dg.ones(batch, 1), dg.zeros(batch, 1)
    centers = real_batch(rng, 1)[1]
    for step in range(args.steps + 1):
        real = dg.tensor(real_batch(rng, batch)[0])
        fake = generator(dg.randn(batch, noise_dim))
        # discriminator: real -> 1, fake -> 0 (fake detached: only D learns here)
        d_loss = F.binary_cross_entropy_with_logits(discriminator(real), ones) + F.binary_cross_entropy_with_logits(
            discriminator(fake.detach()), zeros
        )
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        # generator: make D say 1 on fakes
        g_loss = F.binary_cross_entropy_with_logits(discriminator(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if not args.quiet and rank == 0 and step % 250 == 0:
            m = evaluate(generator, centers, noise_dim=noise_dim)
            print(f"step {step:5d}  D loss {d_loss.item():.3f}  G loss {g_loss.item():.3f}  "
                  f"quality {m['quality']:.2f}  modes covered {m['modes_covered']}/{MODES}", flush=True)  # fmt: skip
    return evaluate(generator, centers, noise_dim=noise_dim)


if __name__ == "__main__":
    main()
