"""Write distgraph/ops/keyword_names.py: where torch's bindings take `out=`, and where they take numpy's names.

Run with torch installed (the test extra's torch 2.13): `python tools/gen_keyword_names.py`.

`OUT[space]`: the functions of torch's namespace `space` ("" for the top level, "linalg", "special") whose
Python binding takes `out=`, among those distgraph has. Torch publishes no such list, so: a candidate is a name
whose aten operator has an out overload (`torch._C._jit_get_schemas_for_operator`); not every out overload
reaches Python (those generated for functionalization do not), so each candidate is called with `out=` on a few
argument patterns: the binding took it when the call gets past torch's argument parser (it returns, or fails on
the values); it did not when the parser names `out`. The few no pattern reaches are settled by hand in
`DECIDED` (each checked against torch 2.13 by a call with valid arguments).

`NUMPY_NAMES[space]` (and "Tensor" for the methods): the functions whose binding is torch's argument parser
(a builtin, not a Python function) and whose aten schema has a `dim` or `keepdim` argument: there the parser
also takes numpy's `axis` and `keepdims` (`x.sum(axis=1, keepdims=True)`).
"""

import textwrap
import types
import warnings
from pathlib import Path

import torch

import distgraph as dg

PATH = Path(__file__).resolve().parent.parent / "distgraph" / "ops" / "keyword_names.py"
NAMESPACES = (
    ("", torch, dg, ""),
    ("linalg", torch.linalg, dg.linalg, "linalg_"),
    ("special", torch.special, dg.special, "special_"),
)
DECIDED = {
    **dict.fromkeys(
        "expand_copy narrow_copy permute_copy unfold_copy view_copy index_reduce nonzero_static split_with_sizes_copy "
        "scatter_reduce select_copy transpose_copy linalg.solve_triangular linalg.lstsq".split(),
        True,
    ),
    **dict.fromkeys(
        "affine_grid_generator constant_pad_nd convolution empty_permuted empty_strided grid_sampler_2d grid_sampler_3d "
        "index_put native_batch_norm native_dropout native_group_norm native_layer_norm rand_like randint_like "
        "randn_like select_scatter unsafe_split_with_sizes argsort bartlett_window blackman_window hamming_window "
        "hann_window kaiser_window tril_indices triu_indices".split(),
        False,
    ),
}


def _arguments(aten):
    try:
        schemas = torch._C._jit_get_schemas_for_operator(aten)
    except RuntimeError:
        return []
    return [a for s in schemas for a in s.arguments]


def _has_out_overload(aten):
    return any(a.is_out for a in _arguments(aten))


def _takes_numpy_names(fn, aten):
    native = isinstance(fn, types.BuiltinFunctionType) or type(fn).__name__ == "method_descriptor"
    return native and any(a.name in ("dim", "keepdim") for a in _arguments(aten))


def _patterns():
    x, idx = torch.rand(3, 3), torch.zeros(3, 3, dtype=torch.long)
    return [(x,), (x, x), (3,), ((3,),), (x, 0), (x, x, x), ([x, x],), (x, 0, idx), ((3,), 1.0), (0.0, 1.0, 5),
            (x, (0,)), (1, x), (x, 1, 1.0), (x, 0, idx, x), (0, 5, (3,)), (x, 2, 0, 1.0), (5,), (x, 0.5),
            (x, 0, idx[0])]  # fmt: skip


def _outs():
    one, two = torch.empty(0), (torch.empty(0), torch.empty(0, dtype=torch.long))
    return [one, two, (one, one, one)]


def takes_out(fn):
    """True / False: the binding took / refused `out=`; None: no pattern reached its parser's verdict."""
    for args in _patterns():
        for out in _outs():
            try:
                fn(*args, out=out)
                return True
            except TypeError as exc:
                text = str(exc)
                if "unexpected keyword argument 'out'" in text:
                    return False
                signatures = text.partition("expected one of")[2]
                if signatures and "out = None" not in signatures:  # none of its signatures has out
                    return False
            except Exception:  # noqa: BLE001  (past the parser: the values were wrong, out= was taken)
                return True
    return None


def _out_names():
    found, undecided = {}, []
    for ns, torch_mod, dg_mod, prefix in NAMESPACES:
        found[ns] = []
        for name in sorted(dir(torch_mod)):
            if name.startswith("_") or not hasattr(dg_mod, name) or not _has_out_overload(f"aten::{prefix}{name}"):
                continue
            key = f"{ns}.{name}" if ns else name
            verdict = DECIDED[key] if key in DECIDED else takes_out(getattr(torch_mod, name))
            if verdict is None:
                undecided.append(key)
            elif verdict:
                found[ns].append(name)
    if undecided:
        raise SystemExit(f"decide these by hand in DECIDED: {undecided}")
    return found


def _numpy_names():
    spaces = [*NAMESPACES[:1], ("Tensor", torch.Tensor, dg.Tensor, ""), *NAMESPACES[1:]]
    return {
        ns: [
            name
            for name in sorted(dir(torch_mod))
            if not name.startswith("_")
            and hasattr(dg_mod, name)
            and _takes_numpy_names(getattr(torch_mod, name), f"aten::{prefix}{name}")
        ]
        for ns, torch_mod, dg_mod, prefix in spaces
    }


def _sets(label, found):
    lines = [f"{label} = {{"]
    for ns, names in found.items():
        lines += [f'    "{ns}": frozenset(', '        """']
        lines += textwrap.wrap(" ".join(names), 116)
        lines += ['""".split()', "    ),"]
    return lines + ["}"]


def main():
    warnings.simplefilter("ignore")
    text = [
        '"""Where torch 2.13\'s bindings take `out=` (OUT) and numpy\'s `axis`/`keepdims` (NUMPY_NAMES), by namespace.',
        "",
        "Generated by tools/gen_keyword_names.py (it says how it decides); torch_keywords.py gives them the keywords.",
        '"""',
        "",
        *_sets("OUT", _out_names()),
        *_sets("NUMPY_NAMES", _numpy_names()),
    ]
    PATH.write_text("\n".join(text) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
