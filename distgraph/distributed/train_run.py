"""What a TorchTrainer run keeps on disk, so a failed attempt can be picked up again (Ray Train's rules).

The run's directory (`storage_path/name`) holds each reported checkpoint as `checkpoint_NNNNNN` and one
JSON line per report in `result.json` (rank 0's metrics, the iteration, the checkpoint's directory name),
written by rank 0 as it reports. The driver reads the reports back from there, not from the ranks'
return values: when a rank dies mid-run, what the attempt reported and checkpointed is still known, and
the next attempt (`FailureConfig(max_failures=)`) resumes from the latest checkpoint. A later fit under the
same `RunConfig(name, storage_path)` carries the run on, as Ray Train V2 does: its reports and kept checkpoints
are the run's, and `get_checkpoint()` is its latest checkpoint.

`CheckpointConfig(num_to_keep=, checkpoint_score_attribute=, checkpoint_score_order=)` deletes the
worst checkpoints beyond `num_to_keep` — by the score, else the oldest — never the latest, the one a
restart resumes from (as Ray's checkpoint manager). `best` is what Ray's Result shows of them: the
best `num_to_keep`, worst first (the latest is kept but not listed when it is not one of them).

The run folder must be one every node sees (Ray's rule: an NFS mount or the like, not a local path): the
driver writes a marker there for each fit and a rank that does not find it fails (`check_storage`).
"""

import json
import math
import numbers
import os
import shutil
import socket
import warnings
from dataclasses import asdict, dataclass

from distgraph.errors import ConfigError, DistributedError

LOG = "result.json"
CONFIG = ".checkpoint_config.json"  # the last fit's CheckpointConfig: how Result.from_path ranks the checkpoints
MARKER = ".validate_storage_marker"  # (Ray's name) the fit's token, written by the driver, read by every rank


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
    """The reports of a run: every line of its result.json, an earlier fit's under the same name included
    (Ray V2's checkpoint manager loads the run's snapshot likewise); `first`: this fit's first checkpoint number."""

    def __init__(self, path):
        self.path, self.file = path, os.path.join(path, LOG)
        self.first = next_checkpoint_number(path)

    def reports(self):
        if not os.path.exists(self.file):
            return []
        with open(self.file) as f:
            return [json.loads(line) for line in f if line.strip()]

    def checkpoints(self):
        """(directory name, metrics) of the run's checkpoints still on disk, in report order."""
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


def best(checkpoints, config):
    """The checkpoints Ray's Result lists (best_checkpoints): the best `num_to_keep`, worst first."""
    ranked_ = ranked(checkpoints, config)
    return ranked_ if config is None or config.num_to_keep is None else ranked_[-config.num_to_keep :]


def prune(path, checkpoints, config):
    """Delete the checkpoints beyond num_to_keep, worst first, never the latest → those kept, in report order."""
    if config is None or config.num_to_keep is None:
        return list(checkpoints)
    worst = ranked(checkpoints, config)[: -config.num_to_keep]
    doomed = {name for name, _ in worst} - {checkpoints[-1][0]}
    for name in doomed:
        shutil.rmtree(os.path.join(path, name), ignore_errors=True)
    return [c for c in checkpoints if c[0] not in doomed]


def save_config(path, config):
    with open(os.path.join(path, CONFIG), "w") as f:
        json.dump(asdict(config), f)


def load_config(path):
    """The CheckpointConfig the run's last fit had (the default one where none was written)."""
    if not os.path.exists(os.path.join(path, CONFIG)):
        return CheckpointConfig()
    with open(os.path.join(path, CONFIG)) as f:
        return CheckpointConfig(**json.load(f))


def mark_storage(path, token):
    """The driver's mark for this fit in the run folder (check_storage)."""
    with open(os.path.join(path, MARKER), "w") as f:
        f.write(token)


def check_storage(path, token):
    """A DistributedError unless this rank sees the driver's mark for this fit: its node does not share the run
    folder (a checkpoint it persisted and rank 0's result.json would be lost to the driver, get_checkpoint()
    missing)."""
    try:
        with open(os.path.join(path, MARKER)) as f:
            seen = f.read()
    except FileNotFoundError:
        seen = None
    if seen != token:
        found = "is another fit's" if seen is not None else "is missing"
        raise DistributedError(
            f"TorchTrainer: the node {socket.gethostname()} does not see the run folder {path} as the driver wrote "
            f"it (its {MARKER} {found}): RunConfig(storage_path) must be a "
            "filesystem every node of the cluster shares (an NFS mount, ...); a local path on the driver's node is "
            "not seen by the other nodes"
        )
