"""What `Trainer.fit` returns: the per-epoch records and the events of a run."""


class History:
    """Per-epoch records (loss, accuracy, samples/s, ...) and the events of the run (faults, resumes).

    Reads like Keras's `history.history`, a dict of lists: `history["loss"]` is the loss per epoch,
    `"accuracy" in history`, `history.keys()`, `.values()`, `.get("val_loss")`, `for name in history`, and
    `history.history` is that dict itself; the records themselves are
    `history.epochs` (a metric an epoch did not record is None there)."""

    def __init__(self, epochs=None, events=None):
        self.epochs = list(epochs or [])
        self.events = list(events or [])

    def keys(self):
        return list(dict.fromkeys(k for e in self.epochs for k in e))

    def __getitem__(self, key):
        if not isinstance(key, str):
            raise TypeError(f"History is indexed by metric name (history['loss']), got {key!r}; epochs: history.epochs")
        if self.epochs and key not in self:
            raise KeyError(f"History has no metric {key!r}; it has {', '.join(self.keys())}")
        return [e.get(key) for e in self.epochs]

    def __contains__(self, key):
        return any(key in e for e in self.epochs)

    def __iter__(self):
        return iter(self.keys())

    def items(self):
        return [(k, self[k]) for k in self.keys()]

    def values(self):
        return [self[k] for k in self.keys()]

    def get(self, key, default=None):
        return self[key] if key in self else default

    @property
    def history(self):
        """Keras's `history.history`: {metric: [value per epoch]}, a plain dict."""
        return dict(self.items())

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        return f"History({len(self.epochs)} epochs, last={self.epochs[-1] if self.epochs else None})"

    def state_dict(self):
        return {"epochs": self.epochs, "events": self.events}


# ---- an epoch's record, from its steps' statistics (Trainer.fit) ------------------------------------------
def epoch_statistics(parts):
    """The loss (and accuracy) of an epoch's steps, each weighted by its samples."""
    total = {"loss_sum": 0.0, "count": 0}
    correct = None
    for p in parts:
        total["loss_sum"] += p["loss"] * p["count"]
        total["count"] += p["count"]
        if "accuracy" in p:
            correct = (correct or 0) + p["accuracy"] * p["count"]
    out = {"loss": total["loss_sum"] / max(total["count"], 1)}
    if correct is not None:
        out["accuracy"] = correct / max(total["count"], 1)
    return out


def steps_summary(parts):
    """An epoch's steps so far as one step's statistics, which a mid-epoch checkpoint keeps: the resumed epoch's
    record then covers all its steps (it had the loss and accuracy of those after the resume only)."""
    skipped = sum(p.get("skipped", 0) for p in parts)
    return {**epoch_statistics(parts), "count": sum(p["count"] for p in parts), "skipped": skipped}


def epoch_line(r):
    """The line `fit` prints after each epoch (with progress on)."""
    parts = [f"epoch {r['epoch']:3d}", f"loss {r['loss']:.4f}"]
    for key in ("accuracy", "val_loss", "val_accuracy"):
        if key in r:
            parts.append(f"{key.replace('_', ' ')} {r[key]:.4f}")
    parts.append(f"{r['samples_per_s']:,.0f} samples/s")
    return "  ".join(parts)
