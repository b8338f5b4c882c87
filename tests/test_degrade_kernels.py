"""Blur kernels: normalisation, symmetries, rotation, and values against closed forms computed by hand."""

import math

import numpy as np
import pytest
from scipy import integrate, special
from srdistill.degrade.ops import kernels
from srdistill.degrade.spec.schema import iter_steps, load_spec

SHAPED = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


def _params(t, size=13, sx=2.0, sy=0.7, theta=0.6, beta=1.7, omega=1.3):
    p = {"type": t, "size": size}
    if t == "sinc":
        p["omega"] = omega
        return p
    p["sigma_x"] = sx
    if t.endswith("aniso"):
        p.update(sigma_y=sy, theta=theta)
    if t.startswith(("generalized", "plateau")):
        p["beta"] = beta
    return p


@pytest.mark.parametrize("t", SHAPED + ["sinc"])
@pytest.mark.parametrize("size", [7, 13, 21])
def test_kernels_are_normalised_centred_and_point_symmetric(t, size):
    k = kernels.build_kernel(_params(t, size=size))
    assert k.shape == (size, size)
    assert abs(k.sum() - 1.0) < 1e-12
    assert np.allclose(k, k[::-1, ::-1], atol=1e-15)  # q(x) = q(-x) for every type
    assert np.unravel_index(np.argmax(k), k.shape) == (size // 2, size // 2)


@pytest.mark.parametrize("t", ["iso", "generalized_iso", "plateau_iso", "sinc"])
def test_isotropic_kernels_have_all_square_symmetries(t):
    k = kernels.build_kernel(_params(t, size=15))
    for view in (k.T, k[::-1], k[:, ::-1], np.rot90(k)):
        assert np.allclose(k, view, atol=1e-15)


def test_iso_gaussian_7x7_matches_exp_formula():
    sigma = 1.3
    want = np.empty((7, 7))
    for r in range(7):
        for c in range(7):
            want[r, c] = math.exp(-((c - 3) ** 2 + (r - 3) ** 2) / (2 * sigma**2))
    want /= want.sum()
    got = kernels.build_kernel({"type": "iso", "size": 7, "sigma_x": sigma})
    assert np.allclose(got, want, rtol=1e-12, atol=0)


def test_iso_gaussian_3x3_hand_values():
    # sigma = 1: centre 1, edges e^-1/2, corners e^-1 before normalising
    total = 1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)
    k = kernels.gaussian_kernel(3, 1.0, 1.0, 0.0)
    assert k[1, 1] == pytest.approx(1 / total, rel=1e-12)
    assert k[0, 1] == pytest.approx(math.exp(-0.5) / total, rel=1e-12)
    assert k[0, 0] == pytest.approx(math.exp(-1) / total, rel=1e-12)


def test_aniso_gaussian_unrotated_spreads_along_columns_by_sigma_x():
    sx, sy = 2.5, 0.8
    k = kernels.gaussian_kernel(11, sx, sy, 0.0)
    r, c = np.mgrid[-5:6, -5:6]
    want = np.exp(-0.5 * (c**2 / sx**2 + r**2 / sy**2))
    assert np.allclose(k, want / want.sum(), rtol=1e-12)
    # second moments along x (columns) and y (rows) follow sigma_x > sigma_y
    var_x, var_y = (k * c**2).sum(), (k * r**2).sum()
    assert var_x > 4 * var_y


@pytest.mark.parametrize("t", ["aniso", "generalized_aniso", "plateau_aniso"])
def test_rotation(t):
    base = _params(t, size=15, theta=0.0)
    k0 = kernels.build_kernel(base)
    quarter = kernels.build_kernel({**base, "theta": math.pi / 2})
    assert np.allclose(quarter, k0.T, atol=1e-14)  # a quarter turn swaps the x and y axes
    assert np.allclose(kernels.build_kernel({**base, "theta": 0.6}),
                       kernels.build_kernel({**base, "theta": 0.6 + math.pi}), atol=1e-14)
    # mirroring rows (y -> -y) turns theta into -theta
    assert np.allclose(kernels.build_kernel({**base, "theta": 0.6})[::-1],
                       kernels.build_kernel({**base, "theta": -0.6}), atol=1e-14)
    assert not np.allclose(kernels.build_kernel({**base, "theta": 0.6}), k0, atol=1e-4)


def test_rotated_gaussian_matches_covariance_formula():
    sx, sy, theta = 2.0, 0.7, 0.6
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    want = np.empty((9, 9))
    for r in range(9):
        for c in range(9):
            v = np.array([c - 4, r - 4])
            want[r, c] = math.exp(-0.5 * v @ inv @ v)
    want /= want.sum()
    assert np.allclose(kernels.gaussian_kernel(9, sx, sy, theta), want, rtol=1e-10)


def test_generalized_and_plateau_closed_forms():
    sigma, beta = 1.5, 2.5
    r, c = np.mgrid[-4:5, -4:5]
    q = (r**2 + c**2) / sigma**2
    g = np.exp(-0.5 * q**beta)
    p = 1 / (1 + q**beta)
    assert np.allclose(kernels.generalized_gaussian_kernel(9, sigma, sigma, 0.0, beta), g / g.sum(), rtol=1e-12)
    assert np.allclose(kernels.plateau_kernel(9, sigma, sigma, 0.0, beta), p / p.sum(), rtol=1e-12)
    assert np.allclose(kernels.generalized_gaussian_kernel(9, sigma, 0.9, 0.3, 1.0),
                       kernels.gaussian_kernel(9, sigma, 0.9, 0.3), rtol=1e-12)


def test_sinc_matches_ideal_circular_lowpass_integral():
    # The impulse response of a disc pass band of radius w: h(r) = 1/(2 pi) * int_0^w J0(rho r) rho drho.
    omega, size = 1.1, 9
    k = kernels.sinc_kernel(size, omega)
    h0 = omega**2 / (4 * math.pi)
    for (r, c) in [(4, 5), (4, 7), (2, 3), (0, 0), (8, 1)]:
        rad = math.hypot(r - 4, c - 4)
        h = integrate.quad(lambda rho, rad=rad: special.j0(rho * rad) * rho, 0, omega)[0] / (2 * math.pi)
        assert k[r, c] / k[4, 4] == pytest.approx(h / h0, rel=1e-7, abs=1e-10)


def test_sinc_frequency_response_is_a_disc():
    # the kernel's transfer function is ~1 inside the cut-off radius and ~0 well outside, in every direction
    omega = 2.0
    k = kernels.sinc_kernel(21, omega)
    r, c = np.mgrid[-10:11, -10:11]

    def response(wx, wy):
        return (k * np.exp(-1j * (wx * c + wy * r))).sum().real

    for wx, wy in [(0.5, 0.0), (0.0, 1.0), (1.0, 1.0)]:
        assert response(wx, wy) == pytest.approx(1.0, abs=0.08)
    for wx, wy in [(2.8, 0.0), (0.0, 2.8), (2.1, 2.1)]:
        assert abs(response(wx, wy)) < 0.08


def test_separable_iso_factor_matches_2d_kernel():
    g = kernels.gaussian_1d(15, 1.7)
    assert abs(g.sum() - 1) < 1e-12
    assert np.allclose(np.outer(g, g), kernels.gaussian_kernel(15, 1.7, 1.7, 0.0), rtol=1e-12)


def test_sampled_kernels_rebuild_and_respect_ranges():
    (blur1,) = [s for s, _ in iter_steps(load_spec("realesrgan").pipeline) if getattr(s, "id", None) == "blur1"]
    ks = kernels.KernelSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in blur1.params["kernel"].items()})
    rng = np.random.default_rng(3)
    for _ in range(300):
        p = kernels.sample_kernel(rng, ks)
        assert p["size"] in ks.sizes
        k = kernels.build_kernel(p)
        assert k.shape == (p["size"], p["size"]) and abs(k.sum() - 1) < 1e-9 and np.isfinite(k).all()
        if p["type"] == "sinc":
            lo, hi = ks.sinc_omega_small if p["size"] < 13 else ks.sinc_omega_large
            assert lo <= p["omega"] <= hi
        else:
            assert ks.sigma_range[0] <= p["sigma_x"] <= ks.sigma_range[1]
            if p["type"].endswith("aniso"):
                assert ks.sigma_range[0] <= p["sigma_y"] <= ks.sigma_range[1]
                assert -math.pi <= p["theta"] <= math.pi
            else:
                assert "sigma_y" not in p and "theta" not in p
