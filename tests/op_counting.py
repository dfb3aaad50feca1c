"""Counting what an iteration asks of torch: every dispatched aten op, and the host reads.

A GPU step is fast only when the host never waits for the device inside it (issue 42). The
reads that make it wait are the aten ops that copy a device value to the host
(``_local_scalar_dense`` behind ``float(t)``, ``bool(t)``, ``.item()``; ``nonzero``, ``unique``,
``masked_select``, whose output size is data-dependent) and the Python-level transfers
(``Tensor.tolist``, ``.numpy()``, ``.cpu()``) plus ``torch.tensor(python data)`` (a blocking
host-to-device copy). On a CPU none of them waits for anything, but each marks a place that
would on a GPU: :class:`Counter` counts them (a ``TorchDispatchMode`` for aten ops, which sees
views too, and a ``TorchFunctionMode`` for the Python-level calls that never reach dispatch).

A reference denoiser (scikit-image's NLM, the ``bm3d`` package) needs the image on the host by
design: its reads are not counted (:data:`HOST_PACKAGES`, found on the Python stack). Counts
per iteration come from two runs of different lengths (:func:`per_iteration`): everything done
once (set-up, the last logged row, the result) cancels.
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops that read a device value back to the host
SYNCING_OPS = frozenset({"_local_scalar_dense", "item", "nonzero", "unique", "_unique",
                         "_unique2", "unique_dim", "unique_consecutive", "masked_select",
                         "is_nonzero", "equal"})
#: Python-level calls that move data to the host (they do not reach dispatch on a CPU)
SYNCING_CALLS = (torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
                 torch.Tensor.__array__)
#: modules whose host transfers are a package denoiser's own (excepted)
HOST_PACKAGES = ("deeprestore/denoisers/reference.py", "deeprestore/denoisers/correlated.py",
                 "skimage/", "bm3d/")


def _in_host_package() -> bool:
    return any(any(part in frame.filename for part in HOST_PACKAGES)
               for frame in traceback.extract_stack())


class Counter:
    """Counts aten ops (``ops``, by name in ``names``) and host reads (``reads``, with where
    they came from in ``where``) inside ``with Counter() as counter:``."""

    def __init__(self) -> None:
        self.ops = 0
        self.names: collections.Counter[str] = collections.Counter()
        self.reads = 0
        self.where: collections.Counter[str] = collections.Counter()
        counter = self

        class Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                                   kwargs: dict[str, Any] | None = None) -> Any:
                name = func.__name__.split(".")[0]
                counter.ops += 1
                counter.names[name] += 1
                if name in SYNCING_OPS:
                    counter.read(name)
                return func(*args, **(kwargs or {}))

        class Function(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                                   kwargs: dict[str, Any] | None = None) -> Any:
                if func in SYNCING_CALLS or (
                        func is torch.tensor and args and not isinstance(args[0], torch.Tensor)):
                    counter.read(getattr(func, "__name__", str(func)))
                return func(*args, **(kwargs or {}))

        self._modes = (Function(), Dispatch())

    def read(self, name: str) -> None:
        """Record a host read unless a package denoiser makes it."""
        if _in_host_package():
            return
        self.reads += 1
        frames = [f for f in traceback.extract_stack()
                  if "deeprestore/" in f.filename and "op_counting" not in f.filename]
        place = f"{frames[-1].filename.split('deeprestore/')[-1]}:{frames[-1].lineno}" if (
            frames) else "?"
        self.where[f"{name} at {place}"] += 1

    def __enter__(self) -> Counter:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def per_iteration(run: Callable[[int], object], short: int, long: int
                  ) -> tuple[float, float, collections.Counter[str]]:
    """(ops, host reads, where the reads came from) per iteration: ``run(iterations)`` counted
    at two lengths after a warm-up run, the difference divided by the difference of lengths."""
    run(short)  # a warm-up: caches filled once per process (a constant, a compiled kernel)
    counts = []
    for iterations in (short, long):
        with Counter() as counter:
            run(iterations)
        counts.append(counter)
    first, second = counts
    steps = long - short
    where = collections.Counter(second.where)
    where.subtract(first.where)
    return ((second.ops - first.ops) / steps, (second.reads - first.reads) / steps,
            +where)
