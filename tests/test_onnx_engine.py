"""`--backend onnxruntime`: the generator on ONNX Runtime gives the faces PyTorch gives (to one
8-bit level), passes the shipped weights' goldens, exports its graph once and caches it, and says
what it needs when it cannot run."""

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.errors import UsageError
from ented_cli.model import onnx_engine
from ented_cli.model.restorer import EntedRestorer
from ented_cli.model.weight_lookup import resolve_weights
from tests.conftest import EXAMPLES
from tests.test_golden import GOLDEN, NETWORK, SHIPPED, SHIPPED_CASES, aligned_crop, to_levels

pytest.importorskip("onnx")  # the exporter needs it: pip install "ented[onnx]"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("ENTED_CACHE_DIR", str(folder))
        yield folder


def shipped(backend: str, batch_size: int = 1) -> EntedRestorer:
    restorer = EntedRestorer(
        resolve_weights(str(SHIPPED)), "cpu", "float32", batch_size, threads=1, backend=backend
    )
    restorer.add_reference("astronaut", aligned_crop("astronaut.png"))
    restorer.add_reference("grace", aligned_crop("grace_hopper.jpg"))
    return restorer


@pytest.fixture(scope="module")
def engines(cache):
    return {backend: shipped(backend, batch_size=8) for backend in ("torch", "onnxruntime")}


# The shipped goldens' faces, and one face with two references (attention over their union).
FACES = {
    **SHIPPED_CASES,
    "astronaut_two_references": ("astronaut_degraded.jpg", 1, ["astronaut", "grace"]),
}


@pytest.mark.slow
def test_onnx_runtime_restores_every_face_as_torch_does(engines):
    """One batch with blind faces, one reference and two (their features padded to a common
    length and masked): every face within one 8-bit level of PyTorch's."""
    faces = np.stack([aligned_crop(name, scale) for name, scale, _ in FACES.values()])
    refs = [keys for _, _, keys in FACES.values()]
    assert engines["onnxruntime"].backend == "onnxruntime"
    torch_faces = to_levels(engines["torch"].restore(faces, refs, 0.5)).astype(int)
    onnx_faces = to_levels(engines["onnxruntime"].restore(faces, refs, 0.5)).astype(int)
    diff = np.abs(onnx_faces - torch_faces)
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SHIPPED_CASES))
def test_onnx_runtime_matches_the_shipped_goldens(engines, case):
    name, scale, refs = SHIPPED_CASES[case]
    face = aligned_crop(name, scale)
    restored = to_levels(engines["onnxruntime"].restore(face[None], [refs], 0.5)[0])
    golden = cv2.imread(str(GOLDEN / f"shipped_{case}.png"))
    diff = restored.astype(int) - golden.astype(int)
    assert np.abs(diff).max() <= NETWORK.max_abs and np.abs(diff).mean() <= NETWORK.mean_abs
    assert np.abs(diff.reshape(-1, 3).mean(axis=0)).max() <= NETWORK.colour_shift


@pytest.mark.slow
def test_the_graph_is_exported_once_and_a_cache_that_cannot_be_written_is_skipped(
    engines, cache, tmp_path, monkeypatch
):
    face = aligned_crop("astronaut_degraded.jpg")[None]
    expected = engines["onnxruntime"].restore(face, [["astronaut"]], 0.5)
    (graph,) = (cache / "onnx").iterdir()  # exported by the first restorer, for these weights

    def no_export(model):
        raise AssertionError("exported again")

    with monkeypatch.context() as mp:  # a second run (process) reads the cached graph
        mp.setattr(onnx_engine, "export_graph", no_export)
        again = shipped("onnxruntime").restore(face, [["astronaut"]], 0.5)
    assert np.array_equal(again, expected)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("ENTED_CACHE_DIR", str(blocked))  # mkdir fails: the graph from memory
    assert np.array_equal(shipped("onnxruntime").restore(face, [["astronaut"]], 0.5), expected)
    assert list((cache / "onnx").iterdir()) == [graph]


@pytest.mark.slow
def test_ented_restore_backend_onnxruntime_writes_the_photo_torch_writes(cache, tmp_path):
    def restore(backend: str):
        out = tmp_path / f"{backend}.png"
        args = ["restore", EXAMPLES / "astronaut_degraded.jpg", "--ref", EXAMPLES / "astronaut.png"]
        args += ["-o", out, "--backend", backend, "--threads", "1", "--json"]
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.stderr
        (report,) = map(json.loads, result.stdout.splitlines())
        assert report["status"] == "restored"
        return cv2.imread(str(out)).astype(int)

    diff = np.abs(restore("onnxruntime") - restore("torch"))
    assert diff.max() <= 1 and diff.mean() < 0.01


def test_backend_onnxruntime_says_what_it_needs_before_loading_the_weights(monkeypatch):
    weights = resolve_weights(str(SHIPPED))
    with pytest.raises(UsageError, match="computes in float32; use --dtype float32"):
        EntedRestorer(weights, "cpu", "float16", backend="onnxruntime")
    monkeypatch.setenv("ENTED_BACKEND", "tensorrt")
    with pytest.raises(UsageError, match="'tensorrt' is unknown; use auto, torch or onnxruntime"):
        EntedRestorer(weights, "cpu")
    monkeypatch.setenv("ENTED_BACKEND", "auto")  # auto: ONNX Runtime only where it can run
    restorer = EntedRestorer(weights, "cpu", "float16")
    assert restorer.backend == "torch"
