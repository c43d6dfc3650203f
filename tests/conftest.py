"""Suite-wide set-up: share the cores between pytest-xdist workers."""
from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _threads_per_worker() -> None:
    # `make test` runs one xdist worker per core. Left at its default, torch would start
    # as many intra-op threads as cores in every worker, and they spin-wait on each other.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
