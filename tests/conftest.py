import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_DATA = Path(os.environ.get("ENTED_SHARED_DATA", ROOT.parent / "shared" / "data"))

needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "london" / "london.csv").is_file(),
    reason="../shared/data is not present (it only exists on the project's own machines)",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "london" / "london.csv").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
