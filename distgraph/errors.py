"""One exception hierarchy for distgraph.

Every error distgraph raises derives from DistgraphError and from the builtin a Python user would
catch for the same mistake (ValueError for shapes, TypeError for dtypes, ...), so both
`except dg.errors.ShapeError` and `except ValueError` work, and from the builtin torch raises where torch's
differs (a RuntimeError for most shape and dtype mistakes: `try: x.view(n) except RuntimeError: x.reshape(n)`
is torch code). Messages name the op, file or key.
"""


class DistgraphError(Exception):
    """Base of every error distgraph raises on purpose."""


class ShapeError(DistgraphError, ValueError, RuntimeError):
    """Operand shapes or a dimension argument do not fit the op (torch raises RuntimeError: a view of
    incompatible strides, mismatched matmul or cat sizes)."""


class SizeMismatchError(ShapeError, AssertionError):
    """Tensors that must share a size do not: torch asserts it (TensorDataset), so `except AssertionError`
    catches it too."""


class DTypeError(DistgraphError, TypeError, RuntimeError):
    """An operand's dtype is not supported by the op, or two dtypes cannot be combined (torch raises
    RuntimeError: float indices to an embedding, mixed dtypes in a matmul)."""


class InputRangeError(DistgraphError, ValueError):
    """An input's values lie outside the op's domain (probabilities outside [0, 1], ...)."""


class LinAlgError(InputRangeError, RuntimeError):
    """A matrix a linear-algebra op needs invertible or positive-definite is not (`dg.linalg.LinAlgError`):
    torch's is a RuntimeError, so `except RuntimeError` and `except torch.linalg.LinAlgError` code catches it."""


class DivisionByZeroError(DistgraphError, ZeroDivisionError):
    """An integer division or remainder by zero (numpy would return 0 and warn; torch raises)."""


class DeviceError(DistgraphError, RuntimeError):
    """Operands live on different devices, or the requested device is unavailable."""


class IndexOutOfRangeError(DistgraphError, IndexError):
    """An index lies outside the indexed dimension."""


class AutogradError(DistgraphError, RuntimeError):
    """Misuse of the autograd engine: freed graph, in-place change of a saved tensor, NaN in anomaly mode."""


class DerivativeNotImplementedError(AutogradError, NotImplementedError):
    """A backward reached an input that the op has no derivative for (torch raises NotImplementedError)."""


class FileFormatError(DistgraphError, ValueError):
    """A file distgraph reads is not a valid distgraph file (names the file and what is wrong)."""


class MissingFileError(FileFormatError, FileNotFoundError):
    """A file to load is not there: a FileFormatError naming it that `except FileNotFoundError` catches too,
    as torch.load's error is caught."""


class ConfigError(DistgraphError, ValueError):
    """A configuration key, value or file is wrong (names the key or file)."""


class SampleCountError(ConfigError, RuntimeError):
    """More samples asked of a draw without replacement than there are: torch raises RuntimeError there
    (WeightedRandomSampler), so `except RuntimeError` catches it too."""


class DistributedError(DistgraphError, RuntimeError):
    """A distributed run could not proceed: unreachable cluster, dead worker, timeout (names what it waited for)."""


class PeerExitedError(DistributedError):
    """A collective found a peer rank's process gone: the peer's death is the cause to report, not this rank."""


class PeerReturnedError(DistributedError):
    """A collective waits for a peer rank that has returned from the launched function: it will never come."""


class NonFiniteError(DistgraphError, FloatingPointError):
    """NaN or Inf where training cannot continue: in a batch's inputs or in the loss (names which)."""


class DataLoaderError(DistgraphError, RuntimeError):
    """A DataLoader worker process died or timed out (names the worker, its pid and the exit signal)."""


class CaptureError(DistgraphError):
    """The function does something a captured graph cannot represent (graph capture stops; callers run
    eagerly)."""
