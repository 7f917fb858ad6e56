"""Shared test setup: the data directory points at the checkout's ../shared/data (never a
copy in the repo), and one BLAS/OpenMP thread: tests assert numbers, not speed, and small
multi-threaded GEMMs crawl when the machine is shared."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if "GPTBENCH_DATA_DIR" not in os.environ and (SHARED_DATA / "tinyshakespeare.txt").is_file():
    os.environ["GPTBENCH_DATA_DIR"] = str(SHARED_DATA)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


@pytest.fixture
def shakespeare_path() -> Path:
    path = Path(os.environ.get("GPTBENCH_DATA_DIR", SHARED_DATA)) / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.fail(f"Tiny Shakespeare missing at {path}: set GPTBENCH_DATA_DIR (CI uses ../shared/data)")
    return path
