"""torch.backends: the switches training scripts set at their top, so that such a script runs unchanged.

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    if torch.backends.mps.is_available(): ...

What each does here. distgraph's GPU path is cupy's: it runs no cuDNN algorithm search (`cudnn.benchmark`), and it
picks no TF32 or reduced-precision kernels by a flag (`allow_tf32`, `allow_fp16_reduced_precision_reduction`). So
these are kept as set, for a script that reads them back, and change nothing. `cudnn.deterministic = True` asks
for what `dg.use_deterministic_algorithms(True)` asks for, and is passed on to it. The `is_available()` /
`is_built()` questions answer for this process: cuDNN and CUDA through cupy, where it is installed and sees a
GPU; no MPS, MKL-DNN or OpenMP backend.
"""

from distgraph.backend import cuda_is_available, cudnn_version


class _Switches:
    """A namespace of settable switches (attributes), with torch's defaults."""

    def __init__(self, **defaults):
        self.__dict__.update(defaults)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class _Cudnn(_Switches):
    def __init__(self):
        super().__init__(enabled=True, benchmark=False, benchmark_limit=10, allow_tf32=True)

    @property
    def deterministic(self):
        from distgraph.ops.torch_names import are_deterministic_algorithms_enabled

        return are_deterministic_algorithms_enabled()

    @deterministic.setter
    def deterministic(self, value):
        from distgraph.ops.torch_names import use_deterministic_algorithms

        use_deterministic_algorithms(bool(value))

    @staticmethod
    def is_available():
        """Whether cupy's cuDNN bindings load and a GPU is there."""
        return cudnn_version() is not None

    @staticmethod
    def version():
        """cuDNN's version as torch gives it (an int such as 90100), or None without it."""
        return cudnn_version()


class _Cuda(_Switches):
    def __init__(self):
        super().__init__(matmul=_Switches(allow_tf32=False, allow_fp16_reduced_precision_reduction=True,
                                          allow_bf16_reduced_precision_reduction=True))  # fmt: skip

    @staticmethod
    def is_built():
        """Whether this distgraph can run on CUDA here (cupy installed and a GPU seen)."""
        return cuda_is_available()


class _Unavailable(_Switches):
    """A backend distgraph does not have (MPS, MKL-DNN, OpenMP): not built, not available."""

    @staticmethod
    def is_available():
        return False

    @staticmethod
    def is_built():
        return False


cudnn = _Cudnn()
cuda = _Cuda()
mps = _Unavailable()
mkldnn = _Unavailable(enabled=False)
openmp = _Unavailable()
