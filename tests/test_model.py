"""The ENTED generator's modules each do their job (DESIGN.md §2-3)."""

import pytest
import torch
from torch import nn

from ented_cli.model.config import EntedConfig, preset
from ented_cli.model.discriminator import Discriminator
from ented_cli.model.generator import EntedGenerator, ReferenceFeatures, count_parameters
from ented_cli.model.layers import ModulatedConv2d
from ented_cli.model.nted import TextureDistribution, TextureExtraction
from ented_cli.model.vq import SemanticCodebook


def make(name: str = "tiny", **overrides) -> EntedGenerator:
    torch.manual_seed(0)
    cfg = preset(name)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    g = EntedGenerator(cfg).eval()
    # Residual convs start at zero (so stage 1 is untouched); give them weights as training would.
    for conv in g.residuals.values():
        nn.init.normal_(conv.weight, std=0.3)
    for p in g.style_refiner.out.parameters():
        nn.init.normal_(p, std=0.3)
    for m in g.modules():  # modulation starts as identity; trained styles do modulate
        if isinstance(m, ModulatedConv2d):
            nn.init.normal_(m.affine.weight, std=0.3)
    return g


def faces(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 256, 256, generator=gen) * 2 - 1


def test_release_generator_and_discriminator_fit_the_parameter_budget():
    assert count_parameters(EntedGenerator(preset("ented-256"))) <= 16_000_000
    assert count_parameters(Discriminator(256)) <= 8_000_000


@pytest.mark.parametrize("name", ["tiny", "ented-256-preview"])
def test_generator_restores_a_batch_to_the_input_shape(name):
    g = make(name)
    with torch.no_grad():
        out = g(faces(2, 0), faces(2, 1), 0.5)
    assert out.shape == (2, 3, 256, 256)
    assert torch.isfinite(out).all()


def test_extraction_attention_is_a_softmax_over_reference_positions():
    ext = TextureExtraction(ref_ch=8, out_ch=12, num_textures=5)
    keys = ext.keys(torch.randn(2, 8, 16, 16))
    attn = TextureExtraction.attention(keys)
    assert attn.shape == (2, 5, 256)
    torch.testing.assert_close(attn.sum(dim=2), torch.ones(2, 5))
    assert ext(torch.randn(2, 8, 16, 16)).shape == (2, 5, 12)  # B x K x C textures


def test_distribution_attention_is_a_softmax_over_textures():
    dist = TextureDistribution(ch=12, num_textures=5)
    x = torch.randn(2, 12, 32, 32)
    attn = dist.attention(x)
    assert attn.shape == (2, 5, 32 * 32)
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(2, 32 * 32))
    assert dist(x, torch.randn(2, 5, 12)).shape == x.shape


def test_quantised_features_are_codebook_entries():
    vq = SemanticCodebook(num_codes=16, dim=8)
    zq, indices, loss = vq(torch.randn(2, 8, 4, 4))
    codes = vq.normalised_codes()
    flat = zq.permute(0, 2, 3, 1).reshape(-1, 8)
    # every output vector is (numerically) one of the code words, the one named by its index
    torch.testing.assert_close(flat, codes[indices.flatten()])
    dists = torch.cdist(flat, codes)
    assert (dists.min(dim=1).values < 1e-3).all()
    assert loss.item() >= 0


def test_straight_through_lookup_passes_gradients_to_the_encoder():
    vq = SemanticCodebook(num_codes=16, dim=8)
    z = torch.randn(1, 8, 4, 4, requires_grad=True)
    zq, _, _ = vq(z)
    zq.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fidelity_weight_changes_the_output():
    g, lq, ref = make(), faces(1, 0), faces(1, 1)
    with torch.no_grad():
        low, high = g(lq, ref, 0.0), g(lq, ref, 1.0)
    assert (low - high).abs().mean() > 1e-3


def test_a_different_reference_changes_the_output():
    g, lq = make(), faces(1, 0)
    with torch.no_grad():
        a, b = g(lq, faces(1, 1), 0.5), g(lq, faces(1, 2), 0.5)
    assert (a - b).abs().mean() > 1e-3


def test_blind_mode_runs_without_a_reference():
    g = make()
    with torch.no_grad():
        out = g(faces(2, 0), None, 0.5)
    assert out.shape == (2, 3, 256, 256)


def test_cached_reference_features_give_the_same_result_as_the_photo():
    g, lq, ref = make(), faces(2, 0), faces(1, 1)
    with torch.no_grad():
        cached = g.encode_reference(ref)
        direct = g(lq, ref.expand(2, -1, -1, -1), 0.5)
        reused = g(lq, ReferenceFeatures.stack([cached, cached]), 0.5)
    torch.testing.assert_close(direct, reused, atol=1e-5, rtol=1e-4)


def test_several_references_are_one_attention_over_their_union():
    # The union of a reference with itself carries exactly the same textures and tokens.
    g, lq, ref = make(), faces(1, 0), faces(1, 1)
    with torch.no_grad():
        one = g(lq, ref, 0.5)
        twice = g(lq, torch.stack([ref, ref], dim=1), 0.5)
        two = g(lq, torch.stack([ref, faces(1, 2)], dim=1), 0.5)
    torch.testing.assert_close(one, twice, atol=1e-5, rtol=1e-4)
    assert (one - two).abs().mean() > 1e-4


def test_faces_with_different_reference_counts_batch_like_single_runs():
    g, lq = make(), faces(2, 0)
    with torch.no_grad():
        r1 = g.encode_reference(faces(1, 1))
        r2 = ReferenceFeatures.join(
            [g.encode_reference(faces(1, 2)), g.encode_reference(faces(1, 3))]
        )
        batched = g(lq, ReferenceFeatures.stack([r1, r2]), 0.5)
        single = torch.cat([g(lq[:1], r1, 0.5), g(lq[1:], r2, 0.5)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("switch", ["use_vq", "use_nted", "use_ref_style", "use_residual"])
def test_each_ented_idea_can_be_switched_off(switch):
    g_off = make(**{switch: False})
    lq, ref = faces(1, 0), faces(1, 1)
    with torch.no_grad():
        out, aux = g_off(lq, ref, 1.0, return_aux=True)
    assert out.shape == (1, 3, 256, 256)
    if switch == "use_vq":
        assert aux["indices"] is None
    if switch == "use_residual":  # fidelity has nothing left to scale
        with torch.no_grad():
            torch.testing.assert_close(out, g_off(lq, ref, 0.0))
    if switch in ("use_nted", "use_ref_style"):
        g_on = make()
        g_on.load_state_dict(g_off.state_dict())
        with torch.no_grad():
            assert (g_on(lq, ref, 1.0) - out).abs().mean() > 1e-4


def test_config_round_trips_through_json_dict():
    cfg = preset("ented-256-preview")
    assert EntedConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        EntedConfig.from_dict({"no_such_key": 1})
