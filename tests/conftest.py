"""Shared fixtures: where ../shared/data is, and skipping of GPU-only tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

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


@pytest.fixture(scope="session")
def tiny_real_grid(tmp_path_factory) -> dict:
    """A real grid, tiny: two backbones x two algorithms, a few steps from random tiny weights,
    and a RIFE row (HD v3 with its released weights: MAML with the paper's and with the cycle
    inner loss, plain and cycle fine-tuning), evaluated on two held-out clip crops (both saved as
    crops). Run once per session; used by the end-to-end notebook test and the browser test of
    the comparison page. Returns the exit code of run_all and the grid's results folder."""
    import sys

    sys.path.insert(0, str(REPO_ROOT))
    import run_all

    grid = {
        "name": "tiny",
        "backbones": ["sepconv", "dvf", "rife_hdv3"],
        "size": "tiny",
        "weights": None,
        "seeds": [0],
        "meta_train": {"dataset": {"name": "clips", "split": "train"}, "steps": 2, "batch_size": 1,
                       "algorithms": ["maml", "metasgd"],
                       "config": {"inner_steps": 1, "inner_lr": 1e-4, "inner_rule": "adam", "first_order": True, "outer_lr": 1e-5},
                       "options": {"crop_size": 48, "progress": False}},
        "evaluate": {"datasets": [{"name": "clips", "split": "test", "stride": 35, "augment": True, "flip": False, "crop_size": 64, "label": "clips"}],
                     "protocols": ["baseline", "finetune", "meta"], "inner_steps": [1, 2], "max_samples": 2, "qualitative": 2},
        "report": {"qualitative": 2},
        "per_backbone": {"rife_hdv3": {"size": "paper", "weights": "default",
                                       "meta_train": {"algorithms": ["maml"], "support_losses": ["triplets", "cycle"], "steps": 1},
                                       "evaluate": {"protocols": ["baseline", "finetune", "cycle", "meta"], "inner_steps": [1],
                                                    "max_samples": 1, "qualitative": 1}}},
    }
    folder = tmp_path_factory.mktemp("tiny_real_grid")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(grid))
    results = folder / "results"
    code = run_all.main(["--grid", str(path), "--results", str(results), "--jobs", "2"])
    return {"exit_code": code, "folder": results / "tiny"}
