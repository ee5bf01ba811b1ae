"""Plumbing shared by the chapters: seeding, thread count and print options (not generated)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEFAULT_THREADS = 2


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a `torch.Generator` seeded with `seed`."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def setup(seed: int = 0, threads: int | None = None) -> torch.Generator:
    """The one call at the top of every chapter.

    Seeds every random number generator, fixes the number of CPU threads (so floating-point
    reductions happen in the same order on every run), and sets short print options so the
    numbers a chapter prints are the ones its regression test compares.
    """
    threads = threads or int(os.environ.get("DDPM_EDU_THREADS", DEFAULT_THREADS))
    torch.set_num_threads(threads)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    torch.set_printoptions(precision=4, sci_mode=False, linewidth=100)
    try:
        import matplotlib

        matplotlib.rcParams.update({"figure.dpi": 72, "figure.figsize": (6, 3), "savefig.dpi": 72,
                                    "animation.embed_limit": 8})
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    return seed_everything(seed)
