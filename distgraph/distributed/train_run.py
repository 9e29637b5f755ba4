"""What a TorchTrainer run keeps on disk, so a failed attempt can be picked up again (Ray Train's rules).

The run's directory (`storage_path/name`) holds each reported checkpoint as `checkpoint_NNNNNN` and one
JSON line per report in `result.json` (rank 0's metrics, the iteration, the checkpoint's directory name),
written by rank 0 as it reports. The driver reads the reports back from there, not from the ranks'
return values: when a rank dies mid-run, what the attempt reported and checkpointed is still known, and
the next attempt (`FailureConfig(max_failures=)`) resumes from the latest checkpoint.

`CheckpointConfig(num_to_keep=, checkpoint_score_attribute=, checkpoint_score_order=)` deletes the
worst checkpoints beyond `num_to_keep` — by the score, else the oldest — never the latest, the one a
restart resumes from (as Ray's checkpoint manager).
"""

import json
import math
import numbers
import os
import shutil
import warnings
from dataclasses import dataclass

from distgraph.errors import ConfigError

LOG = "result.json"


@dataclass
class CheckpointConfig:
    num_to_keep: int = None
    checkpoint_score_attribute: str = None
    checkpoint_score_order: str = "max"

    def __post_init__(self):
        if self.num_to_keep is not None and (not isinstance(self.num_to_keep, int) or self.num_to_keep <= 0):
            raise ConfigError(
                f"CheckpointConfig: Received invalid num_to_keep: {self.num_to_keep}. Must be None or an integer >= 1."
            )
        if self.checkpoint_score_order not in ("max", "min"):
            raise ConfigError(
                f"CheckpointConfig: Received invalid checkpoint_score_order: {self.checkpoint_score_order}. "
                "Must be 'max' or 'min'."
            )


@dataclass
class FailureConfig:
    max_failures: int = 0  # restarts after a failed attempt; -1: without end

    def __post_init__(self):
        if not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ConfigError(f"FailureConfig: max_failures must be an int >= -1, got {self.max_failures!r}")

    def allows(self, failures):
        return self.max_failures == -1 or failures <= self.max_failures


class RunLog:
    """The reports of one fit: the lines of the run's result.json after those already there when it began
    (an earlier fit under the same name keeps its own)."""

    def __init__(self, path):
        self.path, self.file = path, os.path.join(path, LOG)
        self.offset, self.first = len(self._lines()), next_checkpoint_number(path)

    def _lines(self):
        if not os.path.exists(self.file):
            return []
        with open(self.file) as f:
            return [json.loads(line) for line in f if line.strip()]

    def reports(self):
        return self._lines()[self.offset :]

    def checkpoints(self):
        """(directory name, metrics) of this fit's checkpoints still on disk, in report order."""
        return [
            (r["checkpoint_dir_name"], r)
            for r in self.reports()
            if r.get("checkpoint_dir_name") and os.path.isdir(os.path.join(self.path, r["checkpoint_dir_name"]))
        ]

    def remove_unreported(self):
        """Delete this fit's checkpoint directories no report names: copied by a rank of a failed attempt
        before its peers reached the report (perhaps cut off mid-copy); the restart writes that epoch again."""
        reported = {name for name, _ in self.checkpoints()}
        for d in os.listdir(self.path):
            if d.startswith("checkpoint_") and d[11:].isdigit() and int(d[11:]) >= self.first and d not in reported:
                shutil.rmtree(os.path.join(self.path, d), ignore_errors=True)


def append_report(path, report):
    """Rank 0's line for one report, whole or not at all for a reader (one write of one line)."""
    with open(os.path.join(path, LOG), "a") as f:
        f.write(json.dumps(report, default=_plain) + "\n")


def _number(value):
    """A numpy scalar's or one-element tensor's number; anything else as it is."""
    return value.item() if getattr(value, "size", None) == 1 and callable(getattr(value, "item", None)) else value


def _plain(value):
    """numpy scalars and 0-d tensors as the numbers they hold, arrays and tensors as lists (a report of one
    failed its attempt); anything else by its repr."""
    number = _number(value)
    if number is not value:
        return number
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else repr(value)


def next_checkpoint_number(path):
    numbers_used = [int(d[11:]) for d in os.listdir(path) if d.startswith("checkpoint_") and d[11:].isdigit()]
    return max(numbers_used, default=-1) + 1


def score_of(metrics, config, name):
    """The report's score (`checkpoint_score_attribute`, nested dicts read as "a/b", as Ray flattens them);
    None when it is missing (warned: it ranks worst, Ray's -inf); a ConfigError when it is no number."""
    attribute = (config or CheckpointConfig()).checkpoint_score_attribute
    value = metrics
    for key in attribute.split("/") if attribute else ():
        value = value.get(key) if isinstance(value, dict) else None
    if value is None or attribute is None:
        if attribute is not None:
            warnings.warn(f"CheckpointConfig: the report of {name} has no {attribute!r}: it ranks worst", stacklevel=3)
        return None
    value = _number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(
            f"CheckpointConfig: checkpoint_score_attribute {attribute!r} must be a number in every report with a "
            f"checkpoint; the report of {name} has {value!r}"
        )
    return float(value)


def ranked(checkpoints, config):
    """The checkpoints worst first: by the score attribute in its order, else oldest first (Ray's order of
    `best_checkpoints`); a missing score or a NaN is the worst in either order, as Ray's."""
    config = config or CheckpointConfig()
    if config.checkpoint_score_attribute is None:
        return list(checkpoints)
    sign = 1 if config.checkpoint_score_order == "max" else -1

    def score(checkpoint):  # (NaN compares false: sorted would misplace it)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (warned once, when it was reported)
            value = score_of(checkpoint[1], config, checkpoint[0])
        return (False, 0.0) if value is None or math.isnan(value) else (True, sign * value)

    return sorted(checkpoints, key=score)


def prune(path, checkpoints, config):
    """Delete the checkpoints beyond num_to_keep, worst first, never the latest → those kept, in report order."""
    if config is None or config.num_to_keep is None:
        return list(checkpoints)
    worst = ranked(checkpoints, config)[: -config.num_to_keep]
    doomed = {name for name, _ in worst} - {checkpoints[-1][0]}
    for name in doomed:
        shutil.rmtree(os.path.join(path, name), ignore_errors=True)
    return [c for c in checkpoints if c[0] not in doomed]
