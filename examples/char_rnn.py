"""A character-level LSTM language model on a text file that ships with the repo.

Embedding → LSTM → Linear over the characters of `examples/data/tiny_text.txt`; trains on random
windows with teacher forcing, prints the loss as it falls and samples text from the model.

    python examples/char_rnn.py --steps 400
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
    args = parser.parse_args(argv)

    text = TEXT.read_text()
    chars = sorted(set(text))
    data = np.array([chars.index(c) for c in text])
    dg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = CharLSTM(len(chars))
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
