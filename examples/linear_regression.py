"""Fit y = 3x - 2 + noise with one Linear-free parameter pair and plain gradient descent.

The smallest complete distgraph program: tensors with requires_grad, a loss, backward, an update under
no_grad. Run: python examples/linear_regression.py
"""

import argparse

import distgraph as dg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)

    dg.manual_seed(0)
    x = dg.randn(256, 1)
    y = 3 * x - 2 + 0.1 * dg.randn(256, 1)
    w = dg.zeros(1, requires_grad=True)
    b = dg.zeros(1, requires_grad=True)
    for step in range(args.steps):
        loss = ((x * w + b - y) ** 2).mean()
        loss.backward()
        with dg.no_grad():
            w -= args.lr * w.grad
            b -= args.lr * b.grad
            w.grad = None
            b.grad = None
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.5f}")
    print(f"w = {w.item():.3f} (true 3), b = {b.item():.3f} (true -2)")
    return w.item(), b.item()


if __name__ == "__main__":
    main()
