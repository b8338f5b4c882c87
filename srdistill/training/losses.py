"""Pure loss functions of the four distillation papers (tensors in, scalar tensor out).

Each function names the paper and equation it implements. Squared norms ``||.||^2`` are taken
as means over elements (the convention of the papers' code bases); expectations are batch means.
"""
from __future__ import annotations

import ptwt
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# StrSR
# --------------------------------------------------------------------------------------------


def ragan_generator_loss(c_fake: torch.Tensor, c_real: torch.Tensor) -> torch.Tensor:
    """StrSR Eq. 7 (generator): -E[log g(x_pred, x_HR)] - E[log(1 - g(x_HR, x_pred))].

    ``g(x, y) = sigmoid(C(x) - E_y[C(y)])``; ``c_*`` are critic logits (per image or per patch),
    the expectation over ``y`` is the batch mean (per patch position for patch logits).
    """
    c_fake, c_real = c_fake.float(), c_real.float()
    rel_fake = c_fake - c_real.mean(dim=0, keepdim=True)
    rel_real = c_real - c_fake.mean(dim=0, keepdim=True)
    return -(F.logsigmoid(rel_fake).mean() + F.logsigmoid(-rel_real).mean())


def ragan_discriminator_loss(c_real: torch.Tensor, c_fake: torch.Tensor) -> torch.Tensor:
    """StrSR Eq. 7 (discriminator): -E[log g(x_HR, x_pred)] - E[log(1 - g(x_pred, x_HR))]."""
    c_fake, c_real = c_fake.float(), c_real.float()
    rel_real = c_real - c_fake.mean(dim=0, keepdim=True)
    rel_fake = c_fake - c_real.mean(dim=0, keepdim=True)
    return -(F.logsigmoid(rel_real).mean() + F.logsigmoid(-rel_fake).mean())


def approx_r1_loss(d_real: torch.Tensor, d_noisy: torch.Tensor) -> torch.Tensor:
    """StrSR Eq. 8: ||D(x_real) - D(N(x_real, sigma I))||^2, the approximated R1 penalty."""
    return (d_real.float() - d_noisy.float()).pow(2).mean()


def random_patch_projections(channels: int, num_proj: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """Unit-norm random directions over ``channels x patch x patch`` neighbourhoods (FDL's slices)."""
    rand = torch.randn(num_proj, channels, patch, patch, generator=generator)
    return rand / rand.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein-1 distance between the spatial distributions of two feature maps.

    ``x, y``: [B, C, H, W]; every ``C x p x p`` patch is one sample, projected onto each direction of
    ``projections`` [P, C, p, p]; the 1-D distributions are compared by sorting (the optimal 1-D
    transport), giving the mean absolute difference of sorted projections per image, then averaged.
    """
    px = F.conv2d(x, projections).flatten(2)
    py = F.conv2d(y, projections).flatten(2)
    px, _ = torch.sort(px, dim=-1)
    py, _ = torch.sort(py, dim=-1)
    return (px - py).abs().mean()


def fdl_loss(feats_hr: list[torch.Tensor], feats_pred: list[torch.Tensor], projections: list[torch.Tensor],
             phase_weight: float = 1.0) -> torch.Tensor:
    """StrSR Eq. 10 (FDL): SW(A_Phi(x_HR), A_Phi(x_pred)) + lambda * SW(P_Phi(x_HR), P_Phi(x_pred)).

    ``feats_*`` are the feature maps Phi(x) of several layers; A and P are amplitude and phase of
    their 2-D DFT; the distances of all layers are summed.
    """
    total = torch.zeros((), device=feats_hr[0].device)
    for fh, fp, proj in zip(feats_hr, feats_pred, projections, strict=True):
        dh = torch.fft.fft2(fh.float())
        dp = torch.fft.fft2(fp.float())
        total = total + sliced_wasserstein(dh.abs(), dp.abs(), proj)
        total = total + phase_weight * sliced_wasserstein(torch.angle(dh), torch.angle(dp), proj)
    return total


# --------------------------------------------------------------------------------------------
# D3SR
# --------------------------------------------------------------------------------------------

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])


def sobel(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """D3SR Eq. 6-7: S(x) = sqrt((G_x * x)^2 + (G_y * x)^2), per channel, replicate padding.

    ``*`` is cross-correlation (as in the paper's kernels); ``eps`` keeps the square root
    differentiable on flat regions.
    """
    c = x.shape[1]
    kx = SOBEL_X.to(x).expand(c, 1, 3, 3)
    ky = SOBEL_Y.to(x).expand(c, 1, 3, 3)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(xp, kx, groups=c)
    gy = F.conv2d(xp, ky, groups=c)
    return torch.sqrt(gx * gx + gy * gy + eps)


def ea_dists_loss(dists, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """D3SR Eq. 5: EA-DISTS = DISTS(x, y) + DISTS(S(x), S(y)); ``dists(x, y)`` returns per-image scores."""
    return dists(x, y).mean() + dists(sobel(x), sobel(y)).mean()


def forward_diffuse(z: torch.Tensor, alpha_bar_t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """D3SR Eq. 4: F(z, t) = sqrt(abar_t) z + sqrt(1 - abar_t) eps; ``alpha_bar_t`` per sample [B]."""
    a = alpha_bar_t.view(-1, *([1] * (z.dim() - 1))).to(z)
    return a.sqrt() * z + (1 - a).sqrt() * noise


def one_step_x0(z_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: torch.Tensor | float) -> torch.Tensor:
    """D3SR Eq. 1: z_H = (z_L - sqrt(1 - abar_TL) eps_theta(z_L; T_L)) / sqrt(abar_TL)."""
    a = torch.as_tensor(alpha_bar_t, dtype=z_t.dtype, device=z_t.device)
    if a.dim() == 1:
        a = a.view(-1, *([1] * (z_t.dim() - 1)))
    return (z_t - (1 - a).sqrt() * eps) / a.sqrt()


def eps_from_x0(z_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t: torch.Tensor) -> torch.Tensor:
    """Inverse of ``one_step_x0``: the noise an x0-prediction implies at z_t (DDPM parameterisation)."""
    a = alpha_bar_t.view(-1, *([1] * (z_t.dim() - 1))).float()
    return (z_t.float() - a.sqrt() * x0.float()) / (1 - a).sqrt()


def nonsaturating_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """D3SR Eq. 2: -E[log D(F(z_hat_H, t))] with D = sigmoid(logits)."""
    return F.softplus(-logits_fake.float()).mean()


def nonsaturating_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """D3SR Eq. 3: -E[log D(F(z_H, t))] - E[log(1 - D(F(z_hat_H, t)))]."""
    return F.softplus(-logits_real.float()).mean() + F.softplus(logits_fake.float()).mean()


# --------------------------------------------------------------------------------------------
# CTSR
# --------------------------------------------------------------------------------------------


def ctsr_teacher_loss(eps_teacher_student: torch.Tensor, eps_student_student: torch.Tensor,
                      eps_teacher_gt: torch.Tensor, gamma_time: float) -> torch.Tensor:
    """CTSR Eq. 2 / Eq. 3 (same form for the fidelity and the realism teacher):

    ||eps_T(z_t^s, t, c) - eps_S(z_t^s, t, c)||^2 + gamma_time ||eps_T(z_t^s, t, c) - eps_T(z_t, t, c)||^2
    """
    e_ts, e_ss, e_tg = eps_teacher_student.float(), eps_student_student.float(), eps_teacher_gt.float()
    return (e_ts - e_ss).pow(2).mean() + gamma_time * (e_ts - e_tg).pow(2).mean()


def ctsr_control_loss(eps_teacher_t: torch.Tensor, eps_teacher_tp: torch.Tensor, eps_student_t: torch.Tensor,
                      t: torch.Tensor, t_prime: torch.Tensor) -> torch.Tensor:
    """CTSR Eq. 8: ||t eps_TS(z_0, t, c) - t' eps_TS(z_0, t', c) + (t' - t) eps_S(z_t, t, c)||^2."""
    shape = (-1,) + (1,) * (eps_student_t.dim() - 1)
    t, tp = t.view(shape).float(), t_prime.view(shape).float()
    return (t * eps_teacher_t.float() - tp * eps_teacher_tp.float() + (tp - t) * eps_student_t.float()).pow(2).mean()


# --------------------------------------------------------------------------------------------
# VPD-SR
# --------------------------------------------------------------------------------------------


def dwt_high_bands(x: torch.Tensor, wavelet: str = "haar") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-level 2-D DWT (ptwt, differentiable); returns the H, V, D detail bands.

    ptwt takes float32/float64 only, so the transform runs in float32 outside any bf16 autocast.
    """
    with torch.autocast(device_type="cuda" if x.is_cuda else "cpu", enabled=False):
        _, details = ptwt.wavedec2(x.float(), wavelet, level=1, mode="zero")
    return tuple(details)


def hfp_loss(z_teacher: torch.Tensor, z_student: torch.Tensor, wavelet: str = "haar") -> torch.Tensor:
    """VPD-SR Eq. 9: E[||H_T - H_S||^2 + ||V_T - V_S||^2 + ||D_T - D_S||^2] over the DWT high bands."""
    total = torch.zeros((), device=z_student.device)
    for bt, bs in zip(dwt_high_bands(z_teacher, wavelet), dwt_high_bands(z_student, wavelet), strict=True):
        total = total + F.mse_loss(bs, bt)
    return total


def semantic_distill_loss(v_sr: torch.Tensor, v_gt: torch.Tensor) -> torch.Tensor:
    """VPD-SR Eq. 7-8: L_SD = 1 - cos(v_SR, v_GT) of CLIP image embeddings (Eq. 6), batch mean."""
    return (1 - F.cosine_similarity(v_sr.float(), v_gt.float(), dim=-1)).mean()


def hinge_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """VPD-SR Eq. 11: -E[D(z_0^Stu)]."""
    return -d_fake.float().mean()


def hinge_discriminator_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """VPD-SR Eq. 12: E[max(0, 1 - D(z_0))] + E[max(0, 1 + D(z_0^Stu))]."""
    return F.relu(1 - d_real.float()).mean() + F.relu(1 + d_fake.float()).mean()
