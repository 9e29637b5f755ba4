"""What `Trainer.fit` returns: the per-epoch records and the events of a run."""


class History:
    """Per-epoch records (loss, accuracy, samples/s, ...) and the events of the run (faults, resumes).

    Reads like Keras's `history.history`, a dict of lists: `history["loss"]` is the loss per epoch,
    `"accuracy" in history`, `history.keys()`, `for name in history`; the records themselves are
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

    def __len__(self):
        return len(self.epochs)

    def __repr__(self):
        return f"History({len(self.epochs)} epochs, last={self.epochs[-1] if self.epochs else None})"

    def state_dict(self):
        return {"epochs": self.epochs, "events": self.events}
