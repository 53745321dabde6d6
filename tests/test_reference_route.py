"""The aligned-reference route: landmark warp, guide module, reference losses, trainer, restorer."""

import cv2
import numpy as np
import pytest
import torch

from ented_cli.faces.refwarp import Landmarks68, guide_array, pose_distance, warp_reference
from ented_cli.model.config import preset
from ented_cli.model.generator import EntedGenerator
from ented_cli.model.guide import stack_guides, trust_target
from ented_cli.train import losses as L
from ented_cli.train.degrade import DegradationParams
from tests.conftest import needs_shared


def london(shared_data, person: str, expression: str) -> np.ndarray:
    img = cv2.imread(str(shared_data / "london" / "aligned" / f"{person}_{expression}.jpg"))
    return cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)[..., ::-1].copy()


@pytest.mark.slow
@needs_shared
def test_warp_moves_the_reference_onto_the_input_geometry(shared_data):
    lm = Landmarks68()
    for person in ("001", "002", "005"):
        face, ref = london(shared_data, person, "neutral"), london(shared_data, person, "smiling")
        face_pts, ref_pts = lm(face), lm(ref)
        warped, mask = warp_reference(ref.astype(np.float32) / 255, ref_pts, face_pts)
        warped_pts = lm((warped * 255).round().astype(np.uint8))
        before = np.linalg.norm(ref_pts - face_pts, axis=1).mean()
        after = np.linalg.norm(warped_pts - face_pts, axis=1).mean()
        assert after < 0.6 * before, (person, before, after)
        # Valid on the face, not in the corners; pixels there come from the unmoved frame.
        assert mask[128, 128] > 0.5 and mask[5, 5] < 0.01 and mask[250, 250] < 0.01
        assert pose_distance(face_pts, warped_pts) < pose_distance(face_pts, ref_pts)


def test_a_warp_onto_its_own_points_changes_nothing():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(70, 190, (68, 2))]).astype(np.float32)
    img = rng.random((256, 256, 3)).astype(np.float32)
    warped, _mask = warp_reference(img, pts, pts)
    np.testing.assert_allclose(warped, img, atol=1e-4)
    assert guide_array(img, pts, pts).shape == (256, 256, 4)


def test_a_fresh_guide_route_leaves_the_model_output_unchanged():
    """Resuming old weights into the guided model starts exactly where the old model was."""
    torch.manual_seed(0)
    plain_cfg = preset("tiny")
    plain_cfg.use_guide = False
    plain = EntedGenerator(plain_cfg).eval()
    guided = EntedGenerator(preset("tiny")).eval()
    missing = guided.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("guide.") for k in missing)
    lq, ref = torch.rand(2, 3, 256, 256) * 2 - 1, torch.rand(2, 3, 256, 256) * 2 - 1
    guide = torch.cat([ref, torch.ones(2, 1, 256, 256)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(guided(lq, ref, 0.5, guide=guide), plain(lq, ref, 0.5))


def test_the_guide_reaches_the_output_once_trained_weights_are_nonzero():
    torch.manual_seed(0)
    g = EntedGenerator(preset("tiny")).eval()
    with torch.no_grad():
        g.guide.detail_gain.fill_(1.0)
        for conv in g.guide.inject.values():
            conv.weight.normal_(0, 0.1)
    lq, ref = torch.rand(1, 3, 256, 256) * 2 - 1, torch.rand(1, 3, 256, 256) * 2 - 1
    a = torch.cat([ref, torch.ones(1, 1, 256, 256)], dim=1)
    b = torch.cat([-ref, torch.ones(1, 1, 256, 256)], dim=1)
    with torch.no_grad():
        out_a, aux = g(lq, ref, 0.5, guide=a, return_aux=True)
        out_b = g(lq, ref, 0.5, guide=b)
        blind = g(lq, ref, 0.5, guide=None)
    assert (out_a - out_b).abs().mean() > 1e-2 and (out_a - blind).abs().mean() > 1e-2
    assert set(aux["trust"]) == {32, 64, 128, 256} and set(aux["attention"]) == {16, 32, 64, 128}


def _tiny_generator_with_open_detail_path() -> tuple:
    """A seeded tiny generator whose detail path is open (gain 1), and its config to adjust."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    g = EntedGenerator(cfg).eval()
    with torch.no_grad():
        g.guide.detail_gain.fill_(1.0)
    return cfg, g


def test_trust_gain_moves_the_output_detail_band_towards_the_reference():
    # guide_trust_gain (scripts/calibrate_trust.py): 1 is the network as trained; a large gain
    # hands the whole band above guide_band_sigma inside the mask to the warped reference.
    from ented_cli.model.guide import high_pass

    cfg, g = _tiny_generator_with_open_detail_path()
    lq, ref = torch.rand(1, 3, 256, 256) * 2 - 1, torch.rand(1, 3, 256, 256) * 2 - 1
    guide = torch.cat([ref, torch.ones(1, 1, 256, 256)], dim=1)
    with torch.no_grad():
        as_trained = g(lq, ref, 0.5, guide=guide)
        cfg.guide_trust_gain = 1e6
        full = g(lq, ref, 0.5, guide=guide)
    sigma = cfg.guide_band_sigma
    band_gap = lambda out: (high_pass(out, sigma) - high_pass(ref, sigma)).abs().mean()  # noqa: E731
    assert band_gap(full) < 0.1 * band_gap(as_trained)
    assert (full - as_trained).abs().mean() > 1e-2


def test_a_reference_that_agrees_with_the_input_gives_its_whole_detail_band():
    # guide_full_trust_agreement (scripts/calibrate_agreement.py): a face whose warped reference
    # agrees with it (same session, same light) takes full trust; another face does not, and
    # neither does a blind run.
    from ented_cli.model.guide import agreement, mean_agreement

    cfg, g = _tiny_generator_with_open_detail_path()

    def smooth() -> torch.Tensor:
        return (
            torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16), size=256, mode="bicubic") * 2
            - 1
        )

    lq, stranger = smooth(), smooth()
    ref = lq + 0.3 * (torch.rand(1, 3, 256, 256) * 2 - 1)  # the input plus detail of its own
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 48:208, 48:208] = 1
    same, other = torch.cat([ref, mask], dim=1), torch.cat([stranger, mask], dim=1)
    assert float(mean_agreement(agreement(lq, ref, mask), mask)) > 0.8
    assert float(mean_agreement(agreement(lq, stranger, mask), mask)) < 0.3
    with torch.no_grad():
        trained = [g(lq, ref, 0.5, guide=gd) for gd in (same, other, None)]
        cfg.guide_trust_gain = 1e6  # full trust for every face (the trust-gain test above)
        full = g(lq, ref, 0.5, guide=same)
        cfg.guide_trust_gain, cfg.guide_full_trust_agreement = 1.0, 0.5
        calibrated = [g(lq, ref, 0.5, guide=gd) for gd in (same, other, None)]
    torch.testing.assert_close(calibrated[0], full)
    assert (calibrated[0] - trained[0]).abs().mean() > 1e-2
    torch.testing.assert_close(calibrated[1], trained[1])
    torch.testing.assert_close(calibrated[2], trained[2])


def test_trust_target_follows_whether_the_reference_detail_has_the_ground_truths_structure():
    torch.manual_seed(0)
    gt = torch.nn.functional.interpolate(torch.rand(1, 3, 32, 32), size=256, mode="bicubic") * 2 - 1
    shifted = gt.roll(1, dims=-1) * 0.6  # one pixel off and weaker: still the same structure
    other = (
        torch.nn.functional.interpolate(torch.rand(1, 3, 32, 32), size=256, mode="bicubic") * 2 - 1
    )
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 64:192, 64:192] = 1
    right, wrong = trust_target(shifted, gt, mask), trust_target(other, gt, mask)
    assert right.shape == (1, 1, 64, 64)
    assert right[..., 24:40, 24:40].mean() > 0.9 and wrong[..., 24:40, 24:40].mean() < 0.3
    assert right[..., :8, :8].max() == 0


def test_attention_reconstruction_is_zero_for_a_perfect_copy_and_positive_otherwise():
    gt = torch.rand(1, 3, 16, 16) * 2 - 1
    n = 16 * 16
    eye = torch.eye(n)[None]  # K = N textures, each one reference position, painted back in place
    attention = {16: (eye, eye)}
    assert float(L.attention_reconstruction(attention, gt, gt, {16: 1.0})) < 1e-6
    assert float(L.attention_reconstruction(attention, gt.flip(-1), gt, {16: 1.0})) > 0.1


def test_degradation_consistency_ignores_detail_the_input_cannot_see():
    torch.manual_seed(0)
    gt = torch.rand(1, 3, 64, 64) * 2 - 1
    p = [DegradationParams(3.0, 3.0, 0.0, 8.0, 0.0, False, 95, False)]
    fine = torch.randn(1, 3, 64, 64) * 0.05
    fine = fine - torch.nn.functional.avg_pool2d(fine, 8).repeat_interleave(8, 2).repeat_interleave(
        8, 3
    )
    coarse = torch.full_like(gt, 0.3)
    assert float(L.degradation_consistency(gt, gt, p)) < 1e-6
    assert float(L.degradation_consistency(gt + fine, gt, p)) < 0.2 * float(
        L.degradation_consistency(gt + coarse, gt, p)
    )
    out = (gt + coarse).requires_grad_(True)
    L.degradation_consistency(out, gt, p).sum().backward()
    assert out.grad.abs().sum() > 0


def test_lpips_alex_orders_degradations(alex_weights):
    from ented_cli.train.degrade import degrade_level
    from ented_cli.train.lpips_alex import LPIPSAlex

    torch.manual_seed(0)
    x = (
        torch.nn.functional.interpolate(torch.rand(1, 3, 32, 32), size=256, mode="bicubic").clamp(
            0, 1
        )
        * 2
        - 1
    )
    net = LPIPSAlex(alex_weights)
    d = [float(net(degrade_level(x, lv), x)) for lv in ("mild", "medium", "severe")]
    assert float(net(x, x)) < 1e-6 and d[0] < d[1] < d[2]


def test_stack_guides_maps_rgb_to_the_network_range_and_blind_to_zeros():
    g = np.ones((8, 8, 4), np.float32)
    t = stack_guides([g, None], 8)
    assert t.shape == (2, 4, 8, 8) and float(t[0, :3].min()) == 1.0 and float(t[0, 3].min()) == 1.0
    assert float(t[1].abs().max()) == 0.0


@pytest.mark.slow
@needs_shared
def test_trainer_resumes_shipped_style_weights_and_logs_reference_probes(
    shared_data, vgg_weights, alex_weights, tmp_path
):
    from ented_cli.model.weights import save_weight_set
    from ented_cli.train.config import TrainConfig
    from ented_cli.train.trainer import Trainer

    cfg_plain = preset("tiny")
    cfg_plain.use_guide = False
    old = EntedGenerator(cfg_plain)
    manifest = save_weight_set(
        old.state_dict(),
        tmp_path / "w",
        "tiny-old",
        cfg_plain.to_dict(),
        extra={"train_minutes": 7.0, "images_seen": 100},
    )
    cfg = {
        "model": "tiny",
        "data_root": str(shared_data),
        "out_dir": str(tmp_path / "run"),
        "batch_size": 2,
        "stage2_steps": 2,
        "num_workers": 0,
        "log_every": 1,
        "eval_every": 2,
        "eval_images": 2,
        "resume_from": str(manifest),
        "warmup_minutes": 10.0,
        "eval_level": "severe",
        "losses": {
            "perceptual": 0.0,
            "lpips_alex": 1.0,
            "ms_l1": 1.0,
            "fft": 1.0,
            "attn_recon": 5.0,
            "trust": 1.0,
            "degrade_consistency": 1.0,
            "gan": 0.0,
        },
    }
    trainer = Trainer(TrainConfig.from_dict(cfg))
    assert trainer.stage == 2
    trainer.run()
    evals = [h["eval"] for h in trainer.history]
    assert evals and {"ref_effect", "swap_effect", "ref_grad", "blind_lpips"} <= set(evals[-1])
    assert evals[-1]["ref_grad"] > 0
    exported = (tmp_path / "run" / "export" / "tiny-run.json").read_text()
    import json

    extra = json.loads(exported)["extra"]
    assert extra["cumulative_images"] == 100 + 4 and extra["cumulative_minutes"] >= 7.0
    assert json.loads(exported)["config"]["use_guide"] is True


@pytest.mark.slow
@needs_shared
def test_restorer_warps_the_reference_for_guided_weights(shared_data, tmp_path):
    from ented_cli.model.restorer import EntedRestorer, network_rgb
    from ented_cli.model.weight_lookup import resolve_weights
    from ented_cli.model.weights import save_weight_set

    torch.manual_seed(0)
    g = EntedGenerator(preset("tiny"))
    with torch.no_grad():
        g.guide.detail_gain.fill_(1.0)
    ws = resolve_weights(
        str(save_weight_set(g.state_dict(), tmp_path, "tiny-guided", preset("tiny").to_dict()))
    )
    r = EntedRestorer(ws, "cpu")
    face = london(shared_data, "001", "neutral").astype(np.float32) / 255
    right = london(shared_data, "001", "smiling").astype(np.float32) / 255
    wrong = london(shared_data, "002", "smiling").astype(np.float32) / 255
    # The restorer takes BGR faces (the pipeline's order); its guide works in the network's RGB.
    r.add_reference("right", network_rgb(right))
    r.add_reference("wrong", network_rgb(wrong))
    guide = r.guide(face, ["right"])
    assert guide.shape == (256, 256, 4) and guide[128, 128, 3] > 0.5
    a = r.restore(network_rgb(face[None]), [["right"]], 0.5)
    b = r.restore(network_rgb(face[None]), [["wrong"]], 0.5)
    blind = r.restore(network_rgb(face[None]), [[]], 0.5)
    assert np.abs(a - b).mean() > 1e-3 and np.abs(a - blind).mean() > 1e-3
    # Of several references, the one whose geometry is closest to the face is warped.
    assert np.array_equal(
        r.guide(face, ["wrong", "right"]), r.guide(face, ["right"])
    ) or pose_distance(r._ref_faces["wrong"][1], r._points(face)) < pose_distance(
        r._ref_faces["right"][1], r._points(face)
    )
    r.forget_references(["right", "wrong"])
    assert not r._ref_faces
