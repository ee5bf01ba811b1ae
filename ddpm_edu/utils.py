"""Plumbing shared by the chapters and the command line (not generated): seeding, thread count and print options;
the device to run on; atomic file writes and output checks made before long work starts."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

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


# ------------------------------------------------------------------------------------------------ devices
def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; 'cpu', 'cuda', 'cuda:N' or 'mps' force one."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = mps is not None and mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_ok:
            raise ValueError("device 'mps' requested but Apple MPS is not available here")
        return torch.device("mps")
    if name == "cuda" or (isinstance(name, str) and name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here")
        return torch.device(name)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {name!r}")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# ------------------------------------------------------------------------------------------------ files
TEMP_SUFFIX = ".tmp"


def atomic_replace(write, path: str | Path) -> None:
    """Call write(tmp_path), then rename tmp_path to `path` (same folder, so the rename is atomic): a reader sees
    the old file or the new one, never half a file. The temporary file is removed if anything fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temporaries(folder: str | Path, names) -> list[Path]:
    """Delete the temporary files `atomic_replace` leaves when its process is killed (`.NAME.*.tmp` for each
    of `names` in `folder`); return the paths removed."""
    folder, removed = Path(folder), []
    for name in names:
        for tmp in folder.glob(f".{name}.*{TEMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def check_writable_folder(folder: str | Path, what: str = "output folder") -> Path:
    """Make sure files can be created in `folder` (created if missing) before any long work starts; raise
    ValueError naming `what` and the path otherwise."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", suffix=TEMP_SUFFIX, dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"{what} {folder} is not writable ({e.strerror or type(e).__name__})") from None
    return folder


def check_writable_file(path: str | Path, suffixes: tuple[str, ...] = (), what: str = "output file") -> Path:
    """Make sure `path` can be written (a suffix in `suffixes`, not a folder, its folder writable) before any long
    work starts; raise ValueError naming `what` and the path otherwise. An existing file is replaced only at the
    end, atomically."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a file")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"{what} must end in {' or '.join(suffixes)}, got {path.name!r}")
    check_writable_folder(path.parent, f"the folder of {what}")
    return path
