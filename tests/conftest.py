"""Shared fixtures: where ../shared/data is, and skipping of GPU-only tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SAVFI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# One intra-op thread: tests run tiny tensors, where a second thread costs more in
# synchronisation than it gains, and on a shared 2-core machine it was 20-40x slower.
torch.set_num_threads(1)


def _cupy_available() -> bool:
    try:
        import cupy  # noqa: F401
    except Exception:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if not _cupy_available():
        reason = "needs a CUDA GPU with CuPy installed (torch.cuda.is_available() and `import cupy`)"
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data beside the checkout; tests that need it skip loudly without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA} (set SAVFI_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _autograd_stays_enabled():
    """Fail the test that leaves autograd globally disabled (it silently breaks later gradchecks)."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("this test left torch autograd globally disabled")
