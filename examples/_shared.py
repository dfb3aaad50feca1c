"""What the examples share: PSNR on arrays, the printed report, a command line from defaults."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR (dB) of two images in [0, 1] (the estimate clipped)."""
    return float(10 * np.log10(1 / np.mean((np.clip(estimate, 0, 1) - clean) ** 2)))


def report(results: dict[str, float]) -> dict[str, float]:
    """Print one ``name: PSNR dB`` line per result; return them."""
    for name, value in results.items():
        print(f"{name}: {value:.2f} dB")
    return results


def command_line(doc: str, run: Callable[..., Any], **defaults: Any) -> None:
    """Parse ``--NAME VALUE`` for each default (its type) and call ``run`` with them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    run(**vars(parser.parse_args()))
