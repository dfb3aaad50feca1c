"""Transparent huge pages for torch's CPU tensors (Linux).

Every iteration allocates and frees the network's activations. With 4 KiB pages the kernel
faults in and zeroes each new page of them: about 0.9 million page faults per iteration at
512×512. torch's CPU allocator asks for transparent huge pages (``madvise(MADV_HUGEPAGE)``)
for tensors of 2 MiB and more when the environment variable ``THP_MEM_ALLOC_ENABLE`` is 1;
it reads the variable once, at its first CPU allocation. On this project's 2-vCPU machine a
DIP iteration then takes 0.86× the time at 512×512, 0.88× at 256×256 (docs/performance.md).
No effect where the kernel's THP mode is ``never`` or off Linux.

Importing deeprestore changes nothing: the command line's entry point
(:func:`deeprestore.cli.main`) and :func:`deeprestore.api.restore` ask for huge pages, so a
program that only imports the library keeps its environment.
"""

from __future__ import annotations

import os

VARIABLE = "THP_MEM_ALLOC_ENABLE"


def request_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` for torch unless the user set the variable already.

    Must run before torch allocates its first CPU tensor (the CLI's entry point and
    ``deeprestore.restore`` call it first thing); later it changes nothing. Returns whether huge
    pages are requested now (``False`` when the user set the variable to anything but 1, e.g.
    ``THP_MEM_ALLOC_ENABLE=0`` to opt out).
    """
    return os.environ.setdefault(VARIABLE, "1") == "1"
