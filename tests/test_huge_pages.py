"""The CLI and ``deeprestore.restore`` ask torch's CPU allocator for transparent huge pages,
unless the user opted out; importing deeprestore changes nothing.

torch reads ``THP_MEM_ALLOC_ENABLE`` once, at its first CPU allocation; with it, tensors of
2 MiB and more are page-aligned (``posix_memalign`` to the page size, then ``madvise``); without
it they are 64-byte aligned, which for a fresh process's large block lands 64 bytes into a page.
The probe runs in a fresh interpreter, as a command-line run would.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deeprestore.huge_pages import VARIABLE, request_huge_pages

PAGE_ALIGNED = (
    "import os, torch\n"
    "sizes = [2**20 + 1024 * k for k in range(4)]  # float32 elements: 4 MiB and a little more\n"
    "print(all(torch.empty(n).data_ptr() % os.sysconf('SC_PAGESIZE') == 0 for n in sizes))\n"
)


#: what the CLI's entry point does before it parses anything (its modules imported first)
ENTRY_POINT = ("import contextlib, io, deeprestore.cli.main\n"
               "with contextlib.redirect_stdout(io.StringIO()), "
               "contextlib.suppress(SystemExit):\n"
               "    deeprestore.cli.main.main(['version'])")


def _probe(first_import: str, value: str | None, run: str = ENTRY_POINT) -> str:
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    if value is not None:
        env[VARIABLE] = value
    code = f"{first_import}\n{run}\n{PAGE_ALIGNED}"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return done.stdout.strip()


@pytest.mark.parametrize("first_import", ["", "import torch"],
                         ids=["deeprestore first", "torch imported first"])
def test_the_command_line_gives_torch_huge_pages(first_import: str) -> None:
    assert _probe(first_import, None) == "True"


def test_deeprestore_restore_gives_torch_huge_pages() -> None:
    run = ("import numpy, deeprestore\n"
           "deeprestore.restore(numpy.full((16, 16), 0.5), method='nlm', sigma=5)")
    assert _probe("", None, run) == "True"


def test_importing_deeprestore_changes_no_environment_variable() -> None:
    code = ("import os\nbefore = dict(os.environ)\nimport deeprestore, deeprestore.cli.main, "
            "deeprestore.api\nprint(dict(os.environ) == before)")
    env = {k: v for k, v in os.environ.items() if k != VARIABLE}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    assert done.stdout.strip() == "True"


def test_the_user_can_opt_out_and_the_probe_then_sees_small_pages() -> None:
    assert _probe("", "0") == "False"


def test_request_huge_pages_sets_the_variable_only_when_unset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(VARIABLE, raising=False)
    assert request_huge_pages() is True
    assert os.environ[VARIABLE] == "1"
    monkeypatch.setenv(VARIABLE, "0")
    assert request_huge_pages() is False
    assert os.environ[VARIABLE] == "0"
