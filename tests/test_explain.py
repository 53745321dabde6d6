"""`ented explain`: the σ-entropy reliance measure gives the answers tiny purpose-built restorers
force on it, and the command explains a London pair with the shipped weights."""

import json

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from ented_cli.cli.main import main
from ented_cli.explain.measure import Settings, explain
from ented_cli.explain.model_adapter import make_restore_fn
from ented_cli.explain.regions import REGIONS, region_masks
from tests.conftest import SHARED_DATA, needs_shared

SIZE = 128  # the measure works at any size; half the crop keeps these tests fast
FAST = Settings(steps=30, samples=2, seed=0)
FACE = {"face": region_masks(SIZE, names=("face",))["face"]}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy machine they lose a lot to them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_face(seed: int) -> torch.Tensor:
    """A 3 x SIZE x SIZE image in [-1, 1]: coarse structure and fine texture (one 'person')."""
    gen = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.randn(1, 3, 8, 8, generator=gen), size=SIZE, mode="bicubic")
    fine = F.interpolate(torch.randn(1, 3, 32, 32, generator=gen), size=SIZE, mode="bilinear")
    return torch.tanh(0.6 * coarse + 0.4 * fine)[0]


def degrade(face: torch.Tensor, factor: int) -> torch.Tensor:
    """Down-sample by `factor` (area) and back up (bicubic): the detail above 1/factor is gone."""
    small = F.avg_pool2d(face[None], factor)
    return F.interpolate(small, size=face.shape[-1], mode="bicubic", align_corners=False)[0]


def another_photo(face: torch.Tensor) -> torch.Tensor:
    """The same person, another photo: shifted by 2 px and a little brighter."""
    return torch.roll(face, shifts=(2, -1), dims=(1, 2)) * 0.95 + 0.03


def blur(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


class InputOnlyRestorer(nn.Module):
    """Smooths the input; its reference branch exists but its output weight is zero."""

    def __init__(self):
        super().__init__()
        self.ref_branch = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("ref_weight", torch.zeros(()))

    def forward(self, lq, ref, fidelity):
        return blur(lq, 3) + self.ref_weight * self.ref_branch(ref[:, 0])


class ReferenceCopier(nn.Module):
    """Returns the (aligned) reference: everything comes from it."""

    def forward(self, lq, ref, fidelity):
        return ref[:, 0] + 0.0 * lq


def detail(x: torch.Tensor) -> torch.Tensor:
    """Mean high-frequency energy per image (B,)."""
    return (x - blur(x)).abs().mean(dim=(1, 2, 3))


class SeverityBlender(nn.Module):
    """Trusts the reference in proportion to the detail the input has lost relative to it.

    The severity is estimated once from the face and its reference, before restoring (as a
    restorer conditioned on a separate degradation estimator does), so the blend itself is what
    the measure probes."""

    def __init__(self, lq: torch.Tensor, ref: torch.Tensor):
        super().__init__()
        lost = 1 - detail(lq[None]) / detail(ref[None]).clamp_min(1e-6)
        self.register_buffer("trust", lost.clamp(0, 1).reshape(()))

    def forward(self, lq, ref, fidelity):
        return (1 - self.trust) * lq + self.trust * ref[:, 0]


class SimilarityGate(nn.Module):
    """Uses the reference only as much as it looks like the input (coarse structure cosine)."""

    def forward(self, lq, ref, fidelity):
        ref = ref[:, 0]

        def coarse(x):
            c = F.adaptive_avg_pool2d(x, 8).flatten(1)
            return c - c.mean(dim=1, keepdim=True)

        cos = F.cosine_similarity(coarse(lq), coarse(ref), dim=1)
        gate = cos.clamp(0, 1).pow(2).reshape(-1, 1, 1, 1)
        return (1 - gate) * lq + gate * ref


def reliance(model: nn.Module, lq: torch.Tensor, ref: torch.Tensor, settings=FAST) -> float:
    result = explain(make_restore_fn(model), lq, ref, FACE, settings, ref_share=False)["face"]
    assert result.reliance is not None, "the face region must have knowledge points"
    return result.reliance


def test_regions_are_ellipses_around_the_template_points():
    masks = region_masks()
    assert tuple(masks) == REGIONS
    assert masks["eyes"][120, 96] == 1 and masks["eyes"][120, 160] == 1  # on both eyes
    assert masks["nose"][150, 128] == 1 and masks["mouth"][186, 128] == 1
    assert masks["face"][5, 5] == 0 and masks["face"][150, 128] == 1
    assert not (masks["skin"] * (masks["eyes"] + masks["nose"] + masks["mouth"])).any()
    assert (masks["skin"] <= masks["face"]).all()


def test_entropy_is_held_at_the_fixed_mean_for_fair_comparison():
    face = synthetic_face(0)
    result = explain(
        make_restore_fn(SimilarityGate()),
        degrade(face, 8),
        another_photo(face),
        FACE,
        Settings(steps=5, samples=1, target_sigma=0.05),
    )["face"]
    assert result.entropy.shape == (2, 16, 16)
    assert abs(result.entropy.mean() - np.log(0.05)) < 1e-4
    assert (
        result.ref_share.shape == (SIZE, SIZE)
        and 0 <= result.ref_share.min() <= result.ref_share.max() <= 1
    )


def test_zeroed_reference_branch_gives_no_reliance():
    face = synthetic_face(1)
    r = reliance(InputOnlyRestorer(), degrade(face, 8), another_photo(face))
    assert r == pytest.approx(0.0, abs=0.02)


def test_a_model_that_copies_the_reference_relies_on_it():
    face = synthetic_face(2)
    r = reliance(ReferenceCopier(), degrade(face, 8), another_photo(face))
    assert r > 0.95


def test_reliance_rises_with_degradation_severity():
    face = synthetic_face(3)
    ref = another_photo(face)
    lqs = [degrade(face, f) for f in (2, 8, 16)]
    rs = [reliance(SeverityBlender(lq, ref), lq, ref) for lq in lqs]
    assert rs[0] < rs[1] < rs[2], rs


def test_wrong_identity_reference_is_relied_on_less():
    face, stranger = synthetic_face(4), synthetic_face(5)
    lq = degrade(face, 8)
    right = reliance(SimilarityGate(), lq, another_photo(face))
    wrong = reliance(SimilarityGate(), lq, another_photo(stranger))
    assert wrong < right - 0.3, (wrong, right)


def test_same_seed_same_maps_and_several_references_get_their_own_grids():
    face = synthetic_face(6)
    refs = torch.stack([another_photo(face), synthetic_face(7)])
    fn = make_restore_fn(SimilarityGate())
    settings = Settings(steps=4, samples=1, seed=3)
    a = explain(fn, degrade(face, 8), refs, FACE, settings, ref_share=False)["face"]
    b = explain(fn, degrade(face, 8), refs, FACE, settings, ref_share=False)["face"]
    assert a.entropy.shape == (3, 16, 16) and len(a.ref_points_each) == 2
    np.testing.assert_array_equal(a.entropy, b.entropy)


# ------------------------------------------------------------------------------ ented explain
def ented(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_explain_without_a_reference_is_a_usage_error(tmp_path):
    result = ented("explain", tmp_path / "face.png", "-o", tmp_path)
    assert result.exit_code == 2 and "add --ref" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_explain_with_a_missing_input_fails_in_one_line(tmp_path):
    result = ented("explain", tmp_path / "nope.png", "--ref", tmp_path / "ref.png", "-o", tmp_path)
    assert result.exit_code == 1 and "no such file" in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
@needs_shared
def test_explain_a_london_pair_with_the_shipped_weights(tmp_path):
    aligned = SHARED_DATA / "london" / "aligned"
    photo = cv2.imread(str(aligned / "001_neutral.jpg"))
    small = cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)  # x8 degradation
    degraded = tmp_path / "001_x8.png"
    cv2.imwrite(str(degraded), cv2.resize(small, (512, 512), interpolation=cv2.INTER_CUBIC))
    out = tmp_path / "out"
    result = ented(
        "explain",
        degraded,
        "--ref",
        aligned / "001_smiling.jpg",
        "--aligned",
        "--region",
        "all",
        "--steps",
        2,
        "--samples",
        1,
        "-o",
        out,
        "--json",
        "--maps",
    )
    assert result.exit_code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["status"] == "explained" and record["weights"] == "ented-256-preview"
    (face,) = record["faces"]
    assert list(face["regions"]) == list(REGIONS)
    for region in face["regions"].values():
        assert region["reliance"] is None or 0 <= region["reliance"] <= 1
        assert np.array(region["entropy"]).shape == (2, 16, 16)
    picture = cv2.imread(face["picture"])
    assert picture is not None and picture.shape[0] == 256 + 28 and picture.shape[1] >= 3 * 256


class CopiesWarpedReference(nn.Module):
    """A guided model in miniature: its output is the landmark-warped reference it is given."""

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(use_guide=True)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, lq, ref, fidelity, guide=None):
        return guide[:, :3] * self.gain


@needs_shared
def test_guided_weights_are_measured_through_the_warp():
    def crop(name, down=1):
        img = cv2.resize(
            cv2.imread(str(SHARED_DATA / "london" / "aligned" / name)),
            (256, 256),
            interpolation=cv2.INTER_AREA,
        )
        if down > 1:
            img = cv2.resize(
                cv2.resize(img, (256 // down,) * 2, interpolation=cv2.INTER_AREA), (256, 256)
            )
        return torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1).float() / 127.5 - 1

    lq, ref = crop("001_neutral.jpg", 8), crop("001_smiling.jpg")
    masks = {"face": region_masks(256, names=("face",))["face"]}
    result = explain(
        make_restore_fn(CopiesWarpedReference()), lq, ref, masks, FAST, ref_share=False
    )["face"]
    assert result.reliance is not None and result.reliance > 0.9
