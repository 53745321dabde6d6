import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ented_cli.errors import InputError
from ented_cli.evaluation.metrics import psnr
from ented_cli.train.degrade import (
    LEVELS,
    DegradationConfig,
    DegradationParams,
    blur,
    degrade,
    degrade_image,
    degrade_level,
    gaussian_kernels,
)

# No randomness except a fixed σ: isolates the blur (and checks nothing else moves the image).
NEAR_IDENTITY = DegradationConfig(
    blur_sigma=(0.1, 0.1),
    aniso_prob=0.0,
    downscale=(1.0, 1.0),
    noise=(0.0, 0.0),
    jpeg=(100, 100),
    gray_prob=0.0,
)


def _pattern(n: int = 4, size: int = 128) -> torch.Tensor:
    """Structured colour test image (stripes, gradient, disc), different per sample."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for i in range(n):
        r = torch.sin(xx * (6 + i) * math.pi)
        g = yy
        b = ((xx**2 + yy**2) < 0.4).float() * 2 - 1
        out.append(torch.stack([r, g, b]) * 0.9)
    return torch.stack(out)


@pytest.fixture(scope="module")
def faces(shared_data) -> torch.Tensor:
    """Eight real 256 aligned faces from celeba-wild as an N×3×256×256 [-1, 1] batch."""
    files = sorted((shared_data / "celeba-wild").glob("*/*.jpg"))[::700][:8]
    imgs = [cv2.imread(str(f))[:, :, ::-1].copy() for f in files]
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in imgs]).float() / 127.5 - 1


def test_same_seed_gives_bit_identical_output():
    x = _pattern()
    assert torch.equal(degrade(x, 7), degrade(x, 7))
    assert torch.equal(degrade(x, torch.Generator().manual_seed(7)), degrade(x, 7))


def test_different_seeds_give_different_output():
    x = _pattern()
    assert not torch.equal(degrade(x, 1), degrade(x, 2))


def test_each_sample_in_a_batch_gets_its_own_degradation():
    x = _pattern(1).repeat(4, 1, 1, 1)
    y = degrade(x, 3)
    assert all(not torch.equal(y[0], y[i]) for i in range(1, 4))


def test_output_keeps_shape_dtype_and_range():
    x = _pattern(3, 96)
    for seed in range(5):
        y = degrade(x, seed)
        assert y.shape == x.shape and y.dtype == torch.float32
        assert y.min() >= -1 and y.max() <= 1
        assert not torch.equal(y, x)


def test_non_image_input_is_refused():
    with pytest.raises(ValueError, match="N×3×H×W"):
        degrade(torch.zeros(3, 64, 64), 0)


def test_fft_blur_matches_direct_convolution():
    x = _pattern(2, 64)
    params = [
        DegradationParams(3.0, 1.0, 0.6, 1, 0, False, 100, False),
        DegradationParams(1.5, 1.5, 0.0, 1, 0, False, 100, False),
    ]
    k = gaussian_kernels(params, 10)
    padded = F.pad(x, (10, 10, 10, 10), mode="reflect")
    direct = torch.cat(
        [F.conv2d(padded[i : i + 1], k[i].expand(3, 1, 21, 21), groups=3) for i in range(2)]
    )
    assert torch.allclose(blur(x, k), direct, atol=1e-5)


def test_anisotropic_blur_follows_its_orientation():
    # Vertical stripes vary along x: a kernel long in x (θ=0) wipes them out, one long in y keeps them.
    columns = torch.sin(torch.arange(128) * 2 * math.pi / 8)  # period: 8 pixels along x
    stripes = columns.expand(1, 3, 128, 128).contiguous()
    along_x = DegradationParams(6.0, 0.3, 0.0, 1, 0, False, 100, False)
    along_y = DegradationParams(6.0, 0.3, math.pi / 2, 1, 0, False, 100, False)
    kx, ky = gaussian_kernels([along_x, along_y], 20)
    assert blur(stripes, kx[None]).std() < 0.1 * stripes.std()
    assert blur(stripes, ky[None]).std() > 0.8 * stripes.std()


def test_near_identity_config_keeps_the_image(faces):
    # Catches channel swaps (RGB vs cv2's BGR), shifts and range errors in the pipeline.
    assert psnr(degrade(faces, 0, NEAR_IDENTITY), faces).min() > 40


def test_random_degradation_is_visibly_worse_than_the_clean_face(faces):
    p = psnr(degrade(faces, 0), faces)
    assert p.max() < 35 and p.min() > 12


def test_levels_degrade_progressively(faces):
    scores = {level: psnr(degrade_level(faces, level), faces).mean().item() for level in LEVELS}
    assert 25 < scores["mild"] < 35
    assert scores["mild"] > scores["medium"] + 2 > scores["severe"] + 4


def test_levels_are_fixed_and_independent_of_the_batch(faces):
    batch = degrade_level(faces, "medium")
    assert torch.equal(batch, degrade_level(faces, "medium"))
    alone = degrade_level(faces[3:4], "medium")
    assert (batch[3:4] - alone).abs().max() < 2 / 255


def test_unknown_level_is_a_user_error():
    with pytest.raises(InputError, match="mild, medium, severe"):
        degrade_level(_pattern(1), "extreme")


def test_gray_prob_one_gives_gray_images():
    y = degrade(_pattern(), 5, DegradationConfig(gray_prob=1.0))
    assert torch.allclose(y[:, 0], y[:, 1]) and torch.allclose(y[:, 1], y[:, 2])


def test_gray_prob_zero_keeps_colour():
    y = degrade(_pattern(), 5, DegradationConfig(gray_prob=0.0, noise=(0.0, 0.0)))
    assert (y[:, 0] - y[:, 2]).abs().mean() > 0.1


def test_degrade_image_works_on_cv2_images(faces):
    bgr = ((faces[0].permute(1, 2, 0).numpy()[:, :, ::-1] + 1) * 127.5).round().astype(np.uint8)
    out = degrade_image(bgr, 4)
    assert out.shape == bgr.shape and out.dtype == np.uint8
    assert np.array_equal(out, degrade_image(bgr, 4))
    kept = degrade_image(bgr, 0, NEAR_IDENTITY)
    assert cv2.PSNR(kept, bgr) > 40  # BGR stays BGR
    assert cv2.PSNR(degrade_image(bgr, 0, level="severe"), bgr) < 25


def test_degrade_image_refuses_non_uint8_arrays():
    with pytest.raises(InputError, match="uint8"):
        degrade_image(np.zeros((32, 32, 3), np.float32), 0)
