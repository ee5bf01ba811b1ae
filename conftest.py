"""Loaded by pytest before any test module (and so before torch): idle OpenMP threads sleep instead of spinning.

With the default (active) wait policy, PyTorch's OpenMP threads busy-wait between parallel regions; on a CPU shared
with other jobs that slows the chapters' kernels, and the scripts the tests start, several times over (chapter 6
took 2.5-5 minutes under load instead of under one). The chapters' kernels and every subprocess inherit this
setting; a value already set in the environment wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
