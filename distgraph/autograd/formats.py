"""torch's memory formats and layout as names (`dg.contiguous_format`, `dg.channels_last`, `dg.strided`, ...).

Scripts pass them to `contiguous()`, `is_contiguous()` and `.to(memory_format=...)`; distgraph's arrays take any
strides, so channels_last is a real layout here too: the same (N, C, H, W) shape with C fastest in memory
(`channels_last_strides`), which `stride()` and `is_contiguous(memory_format=...)` answer as torch's do.
"""


class MemoryFormat:
    """One of torch's memory formats; equal to its name as a string (the form distgraph's ops took before)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"

    def __eq__(self, other):
        return other.name == self.name if isinstance(other, MemoryFormat) else other == self.name

    def __hash__(self):
        return hash(self.name)

    def __reduce__(self):
        return (_named, (self.name,))


class Layout(MemoryFormat):
    """torch.strided: the only layout distgraph's tensors have (no sparse ones)."""

    __slots__ = ()


contiguous_format = MemoryFormat("contiguous_format")
preserve_format = MemoryFormat("preserve_format")
channels_last = MemoryFormat("channels_last")
channels_last_3d = MemoryFormat("channels_last_3d")
strided = Layout("strided")
_BY_NAME = {f.name: f for f in (contiguous_format, preserve_format, channels_last, channels_last_3d, strided)}


def _named(name):
    return _BY_NAME[name]


def channels_last_order(ndim, memory_format, op):
    """The dims of an `ndim`-d tensor slowest first in `memory_format` (N, H, W, C for channels_last), or None
    for a row-major one; a format that does not fit the rank is refused as torch refuses it."""
    if memory_format is None or memory_format == contiguous_format:
        return None
    if memory_format == preserve_format:
        raise ValueError(f"{op}: preserve memory format is unsupported by the contiguous operator (torch's words)")
    want = {channels_last: 4, channels_last_3d: 5}.get(_BY_NAME.get(getattr(memory_format, "name", memory_format)))
    if want is None:
        raise ValueError(f"{op}: memory_format must be one of torch's memory formats, got {memory_format!r}")
    if ndim != want:
        raise ValueError(f"{op}: required rank {want} tensor to use {memory_format!r} format, got rank {ndim}")
    return (0, *range(2, ndim), 1)
