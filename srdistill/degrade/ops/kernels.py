"""Blur kernels of the Real-ESRGAN model: drawn as parameters, rebuilt from them on demand.

A kernel is stored as a small dict (type, size and shape parameters), never as an array, so a sample's json
stays tiny and the kernel is re-derived exactly. Coordinates: x is the column offset, y the row offset from
the kernel centre; theta rotates the sigma_x axis from +x towards +y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special
from srdistill.core import typed
from srdistill.degrade.ops.opdef import choose

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@dataclass(frozen=True)
class KernelSpec:
    """How a blur kernel is drawn (Real-ESRGAN's kernel family; the `kernel` parameter of the `blur` op)."""

    sizes: tuple[int, ...]  # odd sizes, drawn uniformly
    sinc_prob: float
    sinc_size_threshold: int  # sizes below it use sinc_omega_small, others sinc_omega_large
    sinc_omega_small: tuple[float, float]
    sinc_omega_large: tuple[float, float]
    types: tuple[str, ...]
    type_probs: tuple[float, ...]
    sigma_range: tuple[float, float]
    rotation_range: tuple[float, float]
    betag_range: tuple[float, float]  # generalized Gaussian shape
    betap_range: tuple[float, float]  # plateau shape
    beta_pivot: float  # beta is drawn from [lo, pivot] with beta_below_prob, else from [pivot, hi]
    beta_below_prob: float


def kernel_spec(value, path: str) -> KernelSpec:
    """A KernelSpec from its mapping, checked; UserError naming the bad field by its path."""
    k = typed.build(KernelSpec, value, path)
    typed.odd_sizes(k.sizes, f"{path}.sizes")
    typed.prob(k.sinc_prob, f"{path}.sinc_prob")
    typed.span(k.sinc_omega_small, f"{path}.sinc_omega_small", 1e-6, math.pi)
    typed.span(k.sinc_omega_large, f"{path}.sinc_omega_large", 1e-6, math.pi)
    typed.choices(k.types, KERNEL_TYPES, f"{path}.types")
    typed.probs(k.type_probs, len(k.types), f"{path}.type_probs")
    typed.span(k.sigma_range, f"{path}.sigma_range", 1e-6)
    typed.span(k.rotation_range, f"{path}.rotation_range")
    typed.span(k.betag_range, f"{path}.betag_range", 1e-6)
    typed.span(k.betap_range, f"{path}.betap_range", 1e-6)
    typed.prob(k.beta_below_prob, f"{path}.beta_below_prob")
    for bname in ("betag_range", "betap_range"):
        r = getattr(k, bname)
        typed.check(r[0] <= k.beta_pivot <= r[1],
                    f"{path}.beta_pivot ({k.beta_pivot:g}) must lie within {path}.{bname} {list(r)}.")
    return k


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    return np.meshgrid(ax, ax)  # xx varies along columns, yy along rows


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """x^T Sigma^-1 x with Sigma = R diag(sigma_x^2, sigma_y^2) R^T, R the rotation by theta."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy  # coordinates in the rotated (principal-axis) frame
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """Normalised bivariate Gaussian exp(-q/2)."""
    k = np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta))
    return k / k.sum()


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Normalised generalized Gaussian exp(-q^beta / 2) (beta = 1 is the Gaussian)."""
    k = np.exp(-0.5 * np.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta))
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    """Normalised plateau kernel 1 / (1 + q^beta)."""
    k = 1.0 / (np.power(_quadratic_form(size, sigma_x, sigma_y, theta), beta) + 1.0)
    return k / k.sum()


def sinc_kernel(size: int, omega: float) -> np.ndarray:
    """Normalised circular low-pass (2-D 'sinc', a jinc): h(r) = omega J1(omega r) / (2 pi r), h(0) = omega^2 / 4pi.

    This is the impulse response of an ideal low-pass with a disc of radius omega (rad/pixel) as pass band.
    """
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    centre = size // 2
    r[centre, centre] = 1.0  # placeholder, overwritten below; avoids 0/0
    k = omega * special.j1(omega * r) / (2.0 * np.pi * r)
    k[centre, centre] = omega**2 / (4.0 * np.pi)
    return k / k.sum()


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; outer(g, g) is the isotropic 2-D kernel (used to filter separably)."""
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    return g / g.sum()


def build_kernel(p: dict) -> np.ndarray:
    """The float64 kernel described by parameters `p` (as produced by sample_kernel)."""
    t, size = p["type"], p["size"]
    if t == "sinc":
        return sinc_kernel(size, p["omega"])
    if t.endswith("aniso"):
        sx, sy, theta = p["sigma_x"], p["sigma_y"], p["theta"]
    else:
        sx = sy = p["sigma_x"]
        theta = 0.0
    if t in ("iso", "aniso"):
        return gaussian_kernel(size, sx, sy, theta)
    if t.startswith("generalized"):
        return generalized_gaussian_kernel(size, sx, sy, theta, p["beta"])
    if t.startswith("plateau"):
        return plateau_kernel(size, sx, sy, theta, p["beta"])
    raise ValueError(f"unknown kernel type {t!r}")


def sample_kernel(rng: np.random.Generator, ks: KernelSpec) -> dict:
    """Draw one kernel's parameters (no array work): size, then sinc or one of the six shaped types."""
    size = int(ks.sizes[int(rng.integers(len(ks.sizes)))])
    if rng.random() < ks.sinc_prob:
        lo, hi = ks.sinc_omega_small if size < ks.sinc_size_threshold else ks.sinc_omega_large
        return {"type": "sinc", "size": size, "omega": float(rng.uniform(lo, hi))}
    t = choose(rng, ks.types, ks.type_probs)
    p: dict = {"type": t, "size": size, "sigma_x": float(rng.uniform(*ks.sigma_range))}
    if t.endswith("aniso"):
        p["sigma_y"] = float(rng.uniform(*ks.sigma_range))
        p["theta"] = float(rng.uniform(*ks.rotation_range))
    if t.startswith(("generalized", "plateau")):
        lo, hi = ks.betag_range if t.startswith("generalized") else ks.betap_range
        if rng.random() < ks.beta_below_prob:
            p["beta"] = float(rng.uniform(lo, ks.beta_pivot))
        else:
            p["beta"] = float(rng.uniform(ks.beta_pivot, hi))
    return p
