"""Training configs (YAML): validated against a schema before anything starts, built without code.

A config names everything it uses — dataset, layers, loss, optimizer, scheduler — from allow-lists
(`distgraph.datasets`, the Module classes of `distgraph.nn`, `nn.functional` losses, `distgraph.optim`),
so loading a config can never run code it was not shipped with. Every problem is one line naming
the file and the key: unknown keys, keys given twice, wrong types (of list items too), missing files,
unknown names.
"""

import math
import os

import yaml

from distgraph.backend import DEVICE_STRING
from distgraph.errors import ConfigError, DistgraphError

SCHEMA = {
    "data": {
        "name": str,
        "seed": int,
        "test_fraction": float,
        "samples": int,
        "features": int,
        "classes": int,
        "hidden": int,
    },  # fmt: skip
    "model": list,
    "loss": str,
    "optimizer": {
        "name": str,
        "lr": float,
        "momentum": float,
        "weight_decay": float,
        "betas": [float],  # a list of numbers: its items are converted and checked as a float field
        "nesterov": bool,
        "eps": float,
        "decoupled_weight_decay": bool,
        "momentum_decay": float,
        "rho": float,
        "etas": [float],
        "step_sizes": [float],
        "lambd": float,
        "alpha": float,
        "t0": float,
    },
    # interval: "epoch" (default) or "step" — when the Trainer steps it (Trainer(scheduler_interval=...)); it
    # lives with the scheduler, as Lightning's lr_scheduler config holds its "interval"
    "scheduler": {
        "name": str,
        "interval": str,
        "step_size": int,
        "gamma": float,
        "T_max": int,
        "milestones": [int],
        "eta_min": float,
        "start_factor": float,
        "end_factor": float,
        "total_iters": int,
        "max_lr": float,
        "total_steps": int,
        "epochs": int,
        "steps_per_epoch": int,
        "pct_start": float,
        "anneal_strategy": str,
        "cycle_momentum": bool,
        "base_momentum": float,
        "max_momentum": float,
        "div_factor": float,
        "final_div_factor": float,
        "mode": str,
        "factor": float,
        "patience": int,
        "power": float,
        "T_0": int,
        "T_mult": int,
        "base_lr": float,
        "step_size_up": int,
        "step_size_down": int,
    },
    "train": {"epochs": int, "batch_size": int, "seed": int},
    # dynamic loss scaling (distgraph.amp.GradScaler's arguments); overflowing steps are skipped and counted
    "loss_scaling": {"init_scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int},
    "trainer": {
        "workers": int,
        "backend": str,
        "device": str,
        "sync": str,
        "staleness": int,
        "allreduce": str,
        "bucket_mb": float,
        "checkpoint_dir": str,
        "checkpoint_every": int,
        "checkpoint_every_steps": int,
        "cpus_per_worker": float,  # Ray's num_cpus: 0.5 shares a CPU between two workers
        "bind_to": str,
        "address": str,
        "strategy": str,
        "micro_batches": int,
        "timeout_s": float,
        "max_restarts": int,  # Ray sync: worker restarts per fit (-1: no limit)
    },
}
REQUIRED = ("data", "model", "loss", "optimizer", "train")
LOSSES = ("cross_entropy", "mse_loss", "l1_loss", "smooth_l1_loss", "nll_loss", "binary_cross_entropy_with_logits")
OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta", "Rprop", "ASGD")
SCHEDULERS = (  # those a YAML file can configure: no function (LambdaLR) or scheduler (SequentialLR) arguments
    "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "OneCycleLR", "ReduceLROnPlateau",
    "ConstantLR", "PolynomialLR", "CosineAnnealingWarmRestarts", "CyclicLR",
)  # fmt: skip


DEVICE_HELP = "expected 'cpu', 'cuda' or 'cuda:N'"


def _as_number(value, expected):
    """A float field's numeric string as its float: PyYAML follows YAML 1.1, whose floats need a dot, so
    `lr: 1e-3` is read as the string "1e-3" (YAML 1.2 and Python read it as 0.001) and was refused. Only a
    finite number is taken; anything else stays a string and is refused as one."""
    if expected is float and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _type_ok(value, expected):
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _tname(t):
    if isinstance(t, list):  # [item type]: a list of those
        return {float: "a list of numbers", int: "a list of integers"}[t[0]]
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
    }[t]


def _checked(value, expected, source, key):
    """`value` of field `key` as `expected` (a type, or [item type] for a list whose items are each converted
    and checked, naming e.g. optimizer.step_sizes[0]); a ConfigError naming source and key when it is not."""
    if isinstance(expected, list):
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be {_tname(expected)}, got {value!r}")
        return [_checked(item, expected[0], source, f"{key}[{i}]") for i, item in enumerate(value)]
    value = _as_number(value, expected)
    if not _type_ok(value, expected):
        raise ConfigError(f"{source}: {key} must be {_tname(expected)}, got {value!r}")
    return value


def validate(cfg, source="config"):
    """Raise ConfigError naming `source` and the key for the first problem; return cfg, whose numeric
    strings in float fields and float lists are made floats in place (`_as_number`)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(cfg).__name__}")
    for key in cfg:
        if key not in SCHEMA:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(SCHEMA)})")
    for key in REQUIRED:
        if key not in cfg:
            raise ConfigError(f"{source}: missing required key {key!r}")
    for section, spec in SCHEMA.items():
        if section not in cfg:
            continue
        value = cfg[section]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {section} must be a mapping, got {type(value).__name__}")
            for k, v in value.items():
                if k not in spec:
                    raise ConfigError(f"{source}: unknown key {section}.{k} (known: {', '.join(spec)})")
                value[k] = _checked(v, spec[k], source, f"{section}.{k}")
        elif not _type_ok(value, spec):
            raise ConfigError(f"{source}: {section} must be {_tname(spec)}, got {type(value).__name__}")
    _validate_names(cfg, source)
    return cfg


def _validate_names(cfg, source):
    import distgraph.nn as nn

    if not cfg["model"]:  # else "optimizer: Adam got an empty parameter list", naming the wrong key
        raise ConfigError(f"{source}: model is an empty list: give its layers, e.g. [{{Linear: [64, 10]}}]")
    for i, layer in enumerate(cfg["model"]):
        if not (isinstance(layer, dict) and len(layer) == 1):
            raise ConfigError(f"{source}: model[{i}] must be one mapping like {{Linear: [64, 10]}}, got {layer!r}")
        ((name, args),) = layer.items()
        cls = getattr(nn, name, None)
        # a container without its own forward (ModuleList, ModuleDict) cannot be a layer of the Sequential
        layer_cls = isinstance(cls, type) and issubclass(cls, nn.Module) and cls.forward is not nn.Module.forward
        if not layer_cls or name == "Sequential":
            raise ConfigError(f"{source}: model[{i}]: {name!r} is not a distgraph.nn layer")
        if not isinstance(args, list | dict) and args is not None:
            raise ConfigError(f"{source}: model[{i}].{name}: arguments must be a list or a mapping, got {args!r}")
    if "name" not in cfg["data"]:
        raise ConfigError(f"{source}: missing required key data.name")
    from distgraph import datasets

    datasets.check(cfg["data"], source)
    for key, least in (("seed", 0), ("epochs", 0), ("batch_size", 1)):  # numpy's generators take no negative seed
        if cfg["train"].get(key, least) < least:
            raise ConfigError(f"{source}: train.{key} must be an integer ≥ {least}, got {cfg['train'][key]}")
    if cfg["loss"] not in LOSSES:
        raise ConfigError(f"{source}: loss: unknown loss {cfg['loss']!r} (known: {', '.join(LOSSES)})")
    if cfg["optimizer"].get("name") not in OPTIMIZERS:
        raise ConfigError(f"{source}: optimizer.name must be one of {', '.join(OPTIMIZERS)}")
    if "scheduler" in cfg and cfg["scheduler"].get("name") not in SCHEDULERS:
        raise ConfigError(f"{source}: scheduler.name must be one of {', '.join(SCHEDULERS)}")
    if "scheduler" in cfg:
        from distgraph.trainer_schedule import check_interval

        check_interval(
            cfg["scheduler"].get("interval", "epoch"), cfg["scheduler"]["name"], source, "scheduler.interval"
        )
    from distgraph.amp import check_scaler_options
    from distgraph.trainer_options import check_options

    trainer = cfg.get("trainer", {})
    if "address" in trainer and "backend" not in trainer:  # an address implies Ray, as the CLI's --address does
        trainer["backend"] = "ray"
    if "device" in trainer and not DEVICE_STRING.fullmatch(str(trainer["device"])):
        raise ConfigError(f"{source}: trainer.device: unknown device {trainer['device']!r} ({DEVICE_HELP})")
    check_options(trainer, source, "trainer.")
    micro, batch = trainer.get("micro_batches", 4), cfg["train"].get("batch_size", 32)
    if trainer.get("strategy") == "pipeline" and batch % micro:  # found only inside fit, after the data loaded
        raise ConfigError(
            f"{source}: train.batch_size {batch} is not divisible by trainer.micro_batches {micro}: strategy "
            "pipeline cuts each batch into micro_batches equal parts"
        )
    check_scaler_options(cfg.get("loss_scaling", {}), source, "loss_scaling.")


class _Loader(yaml.SafeLoader):
    """safe_load's loader (YAML tags cannot construct objects) that also refuses a key given twice in one
    mapping, which PyYAML would settle silently by keeping the last value: a ConfigError naming the file,
    the key and both lines."""

    def __init__(self, stream, source):
        super().__init__(stream)
        self.source = source

    def construct_document(self, node):
        _refuse_duplicate_keys(node, "", self.source, set())
        return super().construct_document(node)


def _at(mark):
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _refuse_duplicate_keys(node, path, source, seen_nodes):
    if id(node) in seen_nodes:  # an alias of a node already walked (or a recursive one)
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{path}.{key}" if path else str(key)
            if key is not None and key in lines:
                raise ConfigError(
                    f"{source}: {_at(key_node.start_mark)}: duplicate key {where} (first given at {lines[key]}); "
                    "give each key once"
                )
            lines[key] = _at(key_node.start_mark)
            _refuse_duplicate_keys(value_node, where, source, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{path}[{i}]", source, seen_nodes)


def _yaml_problem(exc):
    """Where and what PyYAML found wrong, on one line: "line 11, column 30: expected ',' or '}', but got ':'
    (while parsing a flow mapping that begins at line 11, column 8)". Its message's first line alone was the
    context ("while parsing a flow mapping"), with neither the line nor the problem."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if not problem:
        return str(exc).splitlines()[0]
    text = f"{_at(mark)}: {problem}" if mark is not None else problem
    if context:
        text += f" ({context}{f' that begins at {_at(context_mark)}' if context_mark is not None else ''})"
    return text


def load_config(path, overrides=None):
    """Read and validate a YAML config (safe_load's rules, and no key twice: `_Loader`). `overrides`:
    trainer options (the command line's) that replace the file's before it is validated, so a file's
    `checkpoint_every` with `--checkpoint-dir` given on the command line is valid."""
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8") as f:
            loader = _Loader(f, path)
            try:
                cfg = loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    if overrides and isinstance(cfg, dict) and isinstance(cfg.get("trainer", {}), dict):
        cfg["trainer"] = {**cfg.get("trainer", {}), **overrides}
    return validate(cfg, path)


def _built(make, source, key):
    """make(), with the error a constructor raises for bad arguments (a missing or unknown keyword, a string for
    a number, a probability of 2, a device argument where a size goes) turned into a ConfigError naming file and
    key."""
    try:
        return make()
    except (TypeError, ValueError, DistgraphError) as exc:
        raise ConfigError(f"{source}: {key}: {exc}") from None


def check_model_fits(cfg, model, loss_fn, data, source="config"):
    """Run the model's layers one by one on the data's first samples, then the loss on their targets: a
    layer whose sizes do not fit what reaches it (`Linear: [127, 10]` after a 128-wide layer), or an output the
    targets do not fit (7 classes for 10), is a ConfigError naming file and key before any training starts,
    not a ShapeError from the first step."""
    import distgraph as dg

    xs, ys = data
    picked = [0, 1] + ([int(ys.argmax())] if ys.dtype.kind in "iu" else [])  # and the highest class the targets name
    x, y = dg.tensor(xs[picked]), dg.tensor(ys[picked])
    training = model.training
    model.eval()  # (no batch statistics of these samples kept by a BatchNorm)
    try:
        with dg.no_grad():
            for i, (layer, entry) in enumerate(zip(model, cfg["model"])):
                try:
                    x = layer(x)
                except DistgraphError as exc:
                    raise ConfigError(f"{source}: model[{i}].{next(iter(entry))}: {exc}") from None
            try:
                loss_fn(x, y)
            except DistgraphError as exc:
                raise ConfigError(f"{source}: loss ({cfg['loss']}) of the model's output: {exc}") from None
    finally:
        model.train(training)


def build_model(cfg, source="config"):
    import distgraph.nn as nn

    layers = []
    for i, layer in enumerate(cfg["model"]):
        ((name, args),) = layer.items()
        cls = getattr(nn, name)
        make = (lambda: cls(**args)) if isinstance(args, dict) else (lambda: cls(*(args or [])))
        layers.append(_built(make, source, f"model[{i}].{name}"))
    return nn.Sequential(*layers)


def build_optimizer(cfg, params, source="config"):
    import distgraph.optim as optim

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg["optimizer"].items() if k != "name"}
    return _built(lambda: getattr(optim, cfg["optimizer"]["name"])(params, **kwargs), source, "optimizer")


def build_scheduler(cfg, optimizer, source="config"):
    if "scheduler" not in cfg:
        return None
    from distgraph.optim import lr_scheduler

    kwargs = {k: v for k, v in cfg["scheduler"].items() if k not in ("name", "interval")}
    return _built(lambda: getattr(lr_scheduler, cfg["scheduler"]["name"])(optimizer, **kwargs), source, "scheduler")


def scheduler_interval(cfg):
    """When the Trainer steps the config's scheduler: "epoch" (the default) or "step"."""
    return cfg.get("scheduler", {}).get("interval", "epoch")


def build_loss(cfg):
    import distgraph.nn.functional as F

    return getattr(F, cfg["loss"])
