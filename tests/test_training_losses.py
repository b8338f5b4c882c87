"""Loss functions of the four recipes against hand-computed values and independent direct formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srdistill.training import losses


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logsig(v: float) -> float:
    return math.log(1 / (1 + math.exp(-v)))


# -- StrSR -------------------------------------------------------------------------------------


def test_ragan_losses_match_eq7_by_hand():
    c_fake = torch.tensor([1.0, 2.0])
    c_real = torch.tensor([0.0, 4.0])  # mean real 2.0, mean fake 1.5
    g = -((_logsig(1 - 2) + _logsig(2 - 2)) / 2 + (_logsig(-(0 - 1.5)) + _logsig(-(4 - 1.5))) / 2)
    d = -((_logsig(0 - 1.5) + _logsig(4 - 1.5)) / 2 + (_logsig(-(1 - 2)) + _logsig(-(2 - 2))) / 2)
    assert losses.ragan_generator_loss(c_fake, c_real).item() == pytest.approx(g, rel=1e-6)
    assert losses.ragan_discriminator_loss(c_real, c_fake).item() == pytest.approx(d, rel=1e-6)


def test_ragan_patch_logits_use_the_batch_mean_per_position():
    c_fake = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    c_real = torch.tensor([[1.0, 1.0], [1.0, 5.0]])
    rel_f = c_fake - c_real.mean(0)
    rel_r = c_real - c_fake.mean(0)
    direct = -(torch.log(torch.sigmoid(rel_f)).mean() + torch.log(1 - torch.sigmoid(rel_r)).mean())
    assert losses.ragan_generator_loss(c_fake, c_real).item() == pytest.approx(direct.item(), rel=1e-6)


def test_approx_r1_is_mean_squared_difference():
    assert losses.approx_r1_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 1.0])).item() == pytest.approx(0.625)


def test_sliced_wasserstein_sorts_projected_samples():
    # one projection on channel 0 with 1x1 patches: samples are the spatial values themselves
    proj = torch.zeros(1, 2, 1, 1)
    proj[0, 0] = 1.0
    x = torch.tensor([3.0, 1.0, 2.0, 7.0]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    y = torch.tensor([0.0, 5.0, 1.0, 7.0]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    # sorted: [1,2,3,7] vs [0,1,5,7] -> |1|+|1|+|2|+0 over 4
    assert losses.sliced_wasserstein(x, y, proj).item() == pytest.approx(1.0)
    perm = x.flatten(2)[..., [3, 0, 2, 1]].view_as(x)
    assert losses.sliced_wasserstein(x, perm, proj).item() == 0.0


def test_fdl_matches_direct_numpy_formula():
    gen = torch.Generator().manual_seed(3)
    fh = [torch.randn(2, 3, 5, 5, generator=gen)]  # odd sizes: no real-valued Nyquist bins whose phase is +-pi
    fp = [torch.randn(2, 3, 5, 5, generator=gen)]
    proj = [losses.random_patch_projections(3, 5, 1, gen)]
    got = losses.fdl_loss(fh, fp, proj, phase_weight=0.5).item()

    def sw(a, b, p):
        pa = np.einsum("bchw,pc->bphw", a, p).reshape(2, 5, -1)
        pb = np.einsum("bchw,pc->bphw", b, p).reshape(2, 5, -1)
        return np.abs(np.sort(pa, -1) - np.sort(pb, -1)).mean()

    p = proj[0][:, :, 0, 0].numpy().astype(np.float64)
    dh, dp = np.fft.fft2(fh[0].numpy()), np.fft.fft2(fp[0].numpy())
    want = sw(np.abs(dh), np.abs(dp), p) + 0.5 * sw(np.angle(dh), np.angle(dp), p)
    assert got == pytest.approx(want, rel=1e-4)


def test_fdl_amplitude_ignores_circular_shifts_but_phase_does_not():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(1, 4, 8, 8, generator=gen)
    shifted = torch.roll(f, shifts=(3, 2), dims=(2, 3))
    proj = [losses.random_patch_projections(4, 16, 1, gen)]
    assert losses.fdl_loss([f], [shifted], proj, phase_weight=0.0).item() < 1e-5
    assert losses.fdl_loss([f], [shifted], proj, phase_weight=1.0).item() > 1e-2


def test_random_patch_projections_are_unit_directions():
    p = losses.random_patch_projections(3, 7, 5, torch.Generator().manual_seed(1))
    assert p.shape == (7, 3, 5, 5)
    assert torch.allclose(p.flatten(1).norm(dim=1), torch.ones(7))


# -- D3SR --------------------------------------------------------------------------------------


def test_sobel_on_a_ramp_and_against_a_direct_loop():
    ramp = torch.arange(6.0).repeat(6, 1).view(1, 1, 6, 6)  # x[i, j] = j
    s = losses.sobel(ramp, eps=0.0)
    assert torch.allclose(s[0, 0, 1:-1, 1:-1], torch.full((4, 4), 8.0))  # (1+2+1) * 2, no vertical edge
    img = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(2))
    pad = torch.nn.functional.pad(img, (1, 1, 1, 1), mode="replicate")[0, 0]
    gx_k, gy_k = losses.SOBEL_X, losses.SOBEL_Y
    want = torch.zeros(5, 5)
    for i in range(5):
        for j in range(5):
            win = pad[i:i + 3, j:j + 3]
            want[i, j] = math.sqrt(float((gx_k * win).sum()) ** 2 + float((gy_k * win).sum()) ** 2)
    assert torch.allclose(losses.sobel(img, eps=0.0)[0, 0], want, atol=1e-5)


def test_ea_dists_adds_the_edge_term():
    def l1(a, b):
        return (a - b).abs().mean(dim=(1, 2, 3))

    gen = torch.Generator().manual_seed(4)
    x, y = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)
    want = l1(x, y).mean() + l1(losses.sobel(x), losses.sobel(y)).mean()
    assert losses.ea_dists_loss(l1, x, y).item() == pytest.approx(want.item(), rel=1e-6)


def test_ea_dists_with_pyiqa_dists_is_zero_only_for_identical_images():
    from srdistill.training.components.perceptual import build_dists

    dists = build_dists("tiny")
    gen = torch.Generator().manual_seed(5)
    x, y = torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 3, 32, 32, generator=gen)
    assert abs(losses.ea_dists_loss(dists, x, x).item()) < 1e-5
    assert losses.ea_dists_loss(dists, x, y).item() > 1e-3


def test_forward_diffusion_and_one_step_inversion():
    x0 = torch.full((1, 1, 1, 1), 2.0)
    eps = torch.ones(1, 1, 1, 1)
    a = torch.tensor([0.64])
    z = losses.forward_diffuse(x0, a, eps)
    assert z.item() == pytest.approx(0.8 * 2 + 0.6 * 1)  # Eq. 4
    assert losses.one_step_x0(z, eps, a).item() == pytest.approx(2.0)  # Eq. 1 inverts Eq. 4
    assert losses.eps_from_x0(z, x0, a).item() == pytest.approx(1.0)
    gen = torch.Generator().manual_seed(6)
    xb, nb = torch.randn(3, 4, 2, 2, generator=gen), torch.randn(3, 4, 2, 2, generator=gen)
    ab = torch.tensor([0.9, 0.5, 0.05])
    assert torch.allclose(losses.one_step_x0(losses.forward_diffuse(xb, ab, nb), nb, ab), xb, atol=1e-5)


def test_nonsaturating_gan_losses_by_hand():
    real, fake = torch.tensor([0.0, 2.0]), torch.tensor([-1.0, 1.0])
    g = -(_logsig(-1.0) + _logsig(1.0)) / 2
    d = -(_logsig(0.0) + _logsig(2.0)) / 2 - (math.log(1 - 1 / (1 + math.e)) + math.log(1 - 1 / (1 + math.exp(-1)))) / 2
    assert losses.nonsaturating_generator_loss(fake).item() == pytest.approx(g, rel=1e-6)
    assert losses.nonsaturating_discriminator_loss(real, fake).item() == pytest.approx(d, rel=1e-6)


# -- CTSR --------------------------------------------------------------------------------------


def test_ctsr_teacher_terms_eq2_eq3_by_hand():
    e_t_s, e_s_s, e_t_z = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    # mean((1,0)^2) + 5.5 * mean((0,2)^2) = 0.5 + 11
    assert losses.ctsr_teacher_loss(e_t_s, e_s_s, e_t_z, 5.5).item() == pytest.approx(11.5)


def test_ctsr_control_loss_eq8_by_hand():
    shape = (1, 1, 1, 1)
    got = losses.ctsr_control_loss(torch.full(shape, 1.0), torch.full(shape, 2.0), torch.full(shape, 3.0),
                                   torch.tensor([0.2]), torch.tensor([0.6]))
    assert got.item() == pytest.approx((0.2 * 1 - 0.6 * 2 + 0.4 * 3) ** 2)


def test_ctsr_control_loss_vanishes_when_eq7_holds():
    gen = torch.Generator().manual_seed(7)
    e_t, e_tp = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    t, tp = torch.tensor([0.1, 0.3]), torch.tensor([0.5, 0.9])
    e_s = (tp.view(-1, 1, 1, 1) * e_tp - t.view(-1, 1, 1, 1) * e_t) / (tp - t).view(-1, 1, 1, 1)
    assert losses.ctsr_control_loss(e_t, e_tp, e_s, t, tp).item() < 1e-10


# -- VPD-SR ------------------------------------------------------------------------------------


def test_hfp_loss_matches_a_hand_haar_transform():
    a, b, c, d = 1.0, 2.0, 3.0, 5.0
    student = torch.tensor([[a, b], [c, d]]).view(1, 1, 2, 2)
    teacher = torch.zeros_like(student)
    h, v, dg = (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2
    assert losses.hfp_loss(teacher, student).item() == pytest.approx(h * h + v * v + dg * dg, rel=1e-6)
    bands = losses.dwt_high_bands(student)
    assert [float(x) for x in bands] == pytest.approx([h, v, dg], rel=1e-6)


def test_hfp_loss_ignores_the_low_band():
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    block_const = torch.randn(2, 4, 4, 4, generator=gen).repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert losses.hfp_loss(z, z + block_const).item() < 1e-10  # constant 2x2 blocks live only in LL
    assert losses.hfp_loss(z, z + torch.randn(2, 4, 8, 8, generator=gen)).item() > 0.1


def test_semantic_distill_loss_is_one_minus_cosine():
    got = losses.semantic_distill_loss(torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert got.item() == pytest.approx(((1 - 1 / math.sqrt(2)) + 0.0) / 2, rel=1e-6)


def test_hinge_losses_eq11_eq12_by_hand():
    d_real, d_fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])
    assert losses.hinge_discriminator_loss(d_real, d_fake).item() == pytest.approx((0.5 + 0.0) / 2 + (0.0 + 1.5) / 2)
    assert losses.hinge_generator_loss(d_fake).item() == pytest.approx(0.75)
