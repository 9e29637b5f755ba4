"""A character-level LSTM language model on a text file that ships with the repo.

Embedding → LSTM → Linear over the characters of `examples/data/tiny_text.txt`; trains on random
windows with teacher forcing, prints the loss as it falls and samples text from the model.

    python examples/char_rnn.py --steps 400
    python examples/char_rnn.py --steps 400 --workers 2 --backend ray   # data-parallel on Ray workers

With `--workers`/`--backend` the same windows are drawn up front and trained by `dg.Trainer`
(sync data-parallel; bit-identical between backend local and ray), one window batch per step.
"""

import argparse
from pathlib import Path

import numpy as np

import distgraph as dg
import distgraph.nn as nn
import distgraph.nn.functional as F

TEXT = Path(__file__).parent / "data" / "tiny_text.txt"


class CharLSTM(nn.Module):
    def __init__(self, vocab, embed=32, hidden=128, layers=1):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx, state=None):
        out, state = self.lstm(self.embed(idx), state)  # (B, T, E) -> (B, T, H)
        return self.head(out), state  # (B, T, V)


class NextCharLogits(nn.Module):
    """The model as the Trainer calls it: inputs → logits only (its loss is `flat_cross_entropy`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx):
        return self.model(idx)[0]


def flat_cross_entropy(logits, target):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def train_with_trainer(model, windows, args):
    """`dg.Trainer` over pre-drawn windows: batch t of the one epoch is windows t·B … (t+1)·B − 1."""
    x, y = windows[:, :-1], windows[:, 1:]
    opt = dg.optim.Adam(model.parameters(), lr=args.lr)
    with dg.Trainer(
        NextCharLogits(model), flat_cross_entropy, opt, workers=args.workers, backend=args.backend,
        progress=not args.quiet, seed=args.seed,
    ) as trainer:  # fmt: skip
        hist = trainer.fit((x, y), epochs=1, batch_size=args.batch_size)
        first = trainer.evaluate((x[: args.batch_size * 10], y[: args.batch_size * 10]))
    return hist, first


def sample(model, chars, start, length, rng, temperature=0.8):
    index = {c: i for i, c in enumerate(chars)}
    idx = dg.tensor(np.array([[index[c] for c in start]]))
    out, state = [], None
    with dg.no_grad():
        for _ in range(length):
            logits, state = model(idx, state)
            p = F.softmax(logits[0, -1] / temperature, -1).numpy().astype(np.float64)
            nxt = int(rng.choice(len(chars), p=p / p.sum()))
            out.append(chars[nxt])
            idx = dg.tensor(np.array([[nxt]]))
    return start + "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Character-level LSTM on a small text.")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seq-len", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="train with dg.Trainer on this many workers")
    parser.add_argument("--backend", choices=("local", "ray"), default=None, help="the Trainer's backend")
    args = parser.parse_args(argv)

    text = TEXT.read_text()
    chars = sorted(set(text))
    data = np.array([chars.index(c) for c in text])
    dg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = CharLSTM(len(chars))
    if args.workers or args.backend:
        args.workers, args.backend = args.workers or 1, args.backend or "local"
        starts = rng.integers(0, len(data) - args.seq_len - 1, args.steps * args.batch_size)
        windows = np.stack([data[s : s + args.seq_len + 1] for s in starts])
        with dg.no_grad():
            before = flat_cross_entropy(model(dg.tensor(windows[:320, :-1]))[0], dg.tensor(windows[:320, 1:])).item()
        hist, after = train_with_trainer(model, windows, args)
        if not args.quiet:
            print(
                f"loss on the first 320 windows: {before:.3f} before, {after['loss']:.3f} after "
                f"({args.workers} worker(s), backend {args.backend}, {hist['samples_per_s'][-1]:,.0f} windows/s)"
            )
            print(sample(model, chars, "The river ", 200, rng))
        return {"first_loss": before, "last_loss": after["loss"]}
    opt = dg.optim.Adam(model.parameters(), lr=args.lr)
    losses = []
    for step in range(args.steps):
        starts = rng.integers(0, len(data) - args.seq_len - 1, args.batch_size)
        window = np.stack([data[s : s + args.seq_len + 1] for s in starts])
        x, y = dg.tensor(window[:, :-1]), dg.tensor(window[:, 1:])
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if not args.quiet and (step % 50 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.3f}")
    if not args.quiet:
        print(sample(model, chars, "The river ", 200, rng))
    return {"first_loss": float(np.mean(losses[:10])), "last_loss": float(np.mean(losses[-10:]))}


if __name__ == "__main__":
    main()
