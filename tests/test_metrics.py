import math

import cv2
import numpy as np
import pytest
import torch

from ented_cli.metrics import psnr, ssim


def _tensor(rgb_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb_uint8.transpose(2, 0, 1).copy())[None].float() / 127.5 - 1


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Independent SSIM (Wang et al.) with cv2 filtering on one float64 [0, 1] channel."""
    g = cv2.getGaussianKernel(11, 1.5)
    win = g @ g.T
    c1, c2 = 0.01**2, 0.03**2

    def f(x):  # 'valid' filtering: filter the whole image, drop the 5-pixel border
        return cv2.filter2D(x, -1, win, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mu_a, mu_b = f(a), f(b)
    var_a, var_b, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(m.mean())


def _luma_reference(rgb_uint8: np.ndarray) -> np.ndarray:
    r, g, b = (rgb_uint8[..., i].astype(np.float64) / 255 for i in range(3))
    return (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255


@pytest.fixture(scope="module")
def face(shared_data) -> np.ndarray:
    bgr = cv2.imread(str(shared_data / "london" / "aligned" / "002_smiling.jpg"))
    return cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()


def _random_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), (0, 0), 2)
    noise = rng.normal(0, 12, a.shape)
    return a, np.clip(a + noise, 0, 255).round().astype(np.uint8)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    a, _ = _random_pair()
    x = _tensor(a)
    assert math.isinf(psnr(x, x).item())
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, x, on="y").item() == pytest.approx(1.0, abs=1e-6)


def test_constant_images_give_the_textbook_values():
    # In [0, 1]: a = 0.5, b = 0.6 → MSE 0.01 → 20 dB; SSIM reduces to its luminance term.
    a = torch.zeros(1, 3, 32, 32)
    b = torch.full((1, 3, 32, 32), 0.2)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert ssim(a, b).item() == pytest.approx(expected, abs=1e-6)


def test_psnr_matches_cv2():
    a, b = _random_pair(1)
    assert psnr(_tensor(a), _tensor(b)).item() == pytest.approx(cv2.PSNR(a, b), abs=1e-3)


def test_psnr_on_y_uses_bt601_luma():
    a, b = _random_pair(2)
    mse = np.mean((_luma_reference(a) - _luma_reference(b)) ** 2)
    assert psnr(_tensor(a), _tensor(b), on="y").item() == pytest.approx(10 * np.log10(1 / mse),
                                                                        abs=1e-3)


def test_ssim_matches_an_independent_implementation():
    a, b = _random_pair(3)
    rgb = np.mean([_ssim_reference(a[..., i] / 255.0, b[..., i] / 255.0) for i in range(3)])
    assert ssim(_tensor(a), _tensor(b)).item() == pytest.approx(rgb, abs=1e-5)
    y = _ssim_reference(_luma_reference(a), _luma_reference(b))
    assert ssim(_tensor(a), _tensor(b), on="y").item() == pytest.approx(y, abs=1e-5)


def test_ssim_of_a_face_drops_with_noise_in_a_plausible_range(face):
    rng = np.random.default_rng(0)
    x = _tensor(face)
    scores = []
    for sigma in (5, 15, 40):
        noisy = np.clip(face + rng.normal(0, sigma, face.shape), 0, 255).round().astype(np.uint8)
        scores.append(ssim(x, _tensor(noisy)).item())
    assert scores[0] > scores[1] > scores[2]
    assert 0.75 < scores[0] < 0.99 and 0.05 < scores[2] < 0.6


def test_ssim_matches_the_reference_on_a_blurred_face(face):
    blurred = cv2.GaussianBlur(face, (0, 0), 2.0)
    ours = ssim(_tensor(face), _tensor(blurred)).item()
    ref = np.mean([_ssim_reference(face[..., i] / 255.0, blurred[..., i] / 255.0) for i in range(3)])
    assert ours == pytest.approx(ref, abs=1e-5) and 0.5 < ours < 0.95


def test_metrics_are_per_image():
    a, b = _random_pair(4)
    c, d = _random_pair(5)
    batch_a, batch_b = torch.cat([_tensor(a), _tensor(c)]), torch.cat([_tensor(b), _tensor(d)])
    for metric in (psnr, ssim):
        values = metric(batch_a, batch_b)
        assert values.shape == (2,)
        assert values[1].item() == pytest.approx(metric(_tensor(c), _tensor(d)).item(), abs=1e-6)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
