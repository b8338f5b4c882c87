"""The Real-ESRGAN reference degradation (basicsr 1.4.2 + realesrgan 0.3.0, unmodified, on the CPU), one HR at a time.

Used by `degrade diff --reference`, bench/bench_degrade.py and tests/test_degrade_parity.py. One call is what
Real-ESRGAN training does per image: RealESRGANDataset.__getitem__ draws the kernels, RealESRGANModel.feed_data
applies the second-order degradation. Around it, only what the reference does for data loading is left out:
the dataset's own 400x400 crop (the HR given here is degraded whole; it must be square, as feed_data's final
paired crop is, and that crop is set to the whole image) and the model's GPU training-pair pool.

The reference's numbers come from a spec (the `realesrgan` preset by default) with the Real-ESRGAN structure
(the version-1 form, degrade/spec/v1.py; a version-2 spec is read through it): fields it takes as options are
passed through; fields it hard-codes must equal the `realesrgan` preset's, or UserError says which differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import sys
import tempfile
import types

import numpy as np

from srdistill.degrade.spec import v1 as spec_v1
from srdistill.degrade.spec.v1_view import from_v2
from srdistill.degrade.spec.schema import PRESET_DIR, DegradationSpec, read_document, resolve
from srdistill.core.errors import UserError

INSTALL_HINT = "pip install basicsr==1.4.2 realesrgan==0.3.0 (the `bench` extra of srdistill)"


def import_reference() -> types.SimpleNamespace:
    """The reference's classes; UserError naming the packages when they are not installed."""
    try:
        import torchvision.transforms._functional_tensor as _ft

        # basicsr 1.4.2 imports torchvision.transforms.functional_tensor, which torchvision 0.17+ renamed to
        # _functional_tensor (and 0.29 removed the old name); alias it so the unmodified reference imports.
        sys.modules.setdefault("torchvision.transforms.functional_tensor", _ft)
        from basicsr.data import degradations
        from basicsr.utils import DiffJPEG, USMSharp
        from basicsr.utils.img_process_util import filter2D
        from realesrgan.data.realesrgan_dataset import RealESRGANDataset
        from realesrgan.models.realesrgan_model import RealESRGANModel
    except ImportError as e:
        raise UserError(f"the Real-ESRGAN reference is not installed ({e.name or e} is missing, looked up in "
                        f"{sys.prefix}); install it with {INSTALL_HINT}.") from None
    return types.SimpleNamespace(DiffJPEG=DiffJPEG, USMSharp=USMSharp, filter2D=filter2D,
                                 degradations=degradations, Dataset=RealESRGANDataset, Model=RealESRGANModel)


# Spec fields the reference hard-codes (compared with the realesrgan preset), as dotted paths.
_FIXED = (
    "usm", "stage1.blur_prob", "final.jpeg_first_prob", "final.modes", "final.mode_probs", "final.sinc_sizes",
    "final.sinc_omega", "stage1.resize.coords", "stage2.resize.coords", "stage1.jpeg_codec", "stage2.jpeg_codec",
    *(f"{st}.{f}" for st in ("stage1", "stage2") for f in (
        "kernel.sizes", "kernel.sinc_size_threshold", "kernel.sinc_omega_small", "kernel.sinc_omega_large",
        "kernel.rotation_range", "kernel.beta_pivot", "kernel.beta_below_prob", "resize.modes",
        "resize.mode_probs")),
)


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)  # a field this spec format lacks reads as absent
    return obj


def reference_options(spec: DegradationSpec) -> tuple[dict, dict]:
    """(RealESRGANDataset kernel options, RealESRGANModel degradation options) for `spec`."""
    v2 = spec
    spec = from_v2(v2)
    if spec is None or spec.kind != "second_order":
        raise UserError(f"the Real-ESRGAN reference runs specs with the structure of the realesrgan preset only "
                        f"(its steps and ids; other numbers are fine); spec {v2.name!r} has another.")
    base = spec_v1.spec_from_dict(resolve(read_document(PRESET_DIR / "v1" / "realesrgan.yaml"), "realesrgan"))
    for path in _FIXED:
        if _get(spec, path) != _get(base, path):
            raise UserError(f"the Real-ESRGAN reference hard-codes spec.{path} = {_get(base, path)!r}; this spec "
                            f"has {_get(spec, path)!r}.")
    st1, st2 = spec.stage1, spec.stage2
    data_opt = {"final_sinc_prob": spec.final.sinc_prob, "blur_kernel_size": max(st1.kernel.sizes),
                "blur_kernel_size2": max(st2.kernel.sizes)}
    for st, sfx in ((st1, ""), (st2, "2")):
        k = st.kernel
        data_opt.update({f"kernel_list{sfx}": list(k.types), f"kernel_prob{sfx}": list(k.type_probs),
                         f"sinc_prob{sfx}": k.sinc_prob, f"blur_sigma{sfx}": list(k.sigma_range),
                         f"betag_range{sfx}": list(k.betag_range), f"betap_range{sfx}": list(k.betap_range)})
    model_opt = {"scale": spec.scale, "second_blur_prob": st2.blur_prob}
    for st, sfx in ((st1, ""), (st2, "2")):
        model_opt.update({f"resize_prob{sfx}": list(st.resize.probs), f"resize_range{sfx}": list(st.resize.range),
                          f"gaussian_noise_prob{sfx}": st.noise.gaussian_prob,
                          f"noise_range{sfx}": list(st.noise.sigma_range),
                          f"poisson_scale_range{sfx}": list(st.noise.poisson_scale_range),
                          f"gray_noise_prob{sfx}": st.noise.gray_prob, f"jpeg_range{sfx}": list(st.jpeg_quality)})
    return data_opt, model_opt


class _ReusedUSM:
    """USMSharp with its last few results kept, keyed by the input's bytes (the output is a pure function)."""

    def __init__(self, usm, keep: int = 8) -> None:
        self.usm, self.keep, self.cache = usm, keep, {}

    def __call__(self, img):
        key = (tuple(img.shape), hashlib.sha1(img.contiguous().numpy().tobytes()).hexdigest())
        if key not in self.cache:
            if len(self.cache) >= self.keep:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self.usm(img)
        return self.cache[key].clone()


@dataclasses.dataclass
class ReferenceDegrader:
    """Degrades uint8 HxWx3 RGB HRs (square, sides multiples of the scale) with the reference, seeded once.

    Seeding sets the global `random`, `numpy.random` and torch generators, which the reference draws from.
    `reuse_usm` serves USMSharp's output for an image it has already sharpened (it is a pure function, and
    feed_data sharpens the same HR twice, the second time for the loss target; repeated draws on one HR
    sharpen it again each time); False keeps the reference's full cost, for timing it.
    """

    spec: DegradationSpec
    seed: int = 0
    reuse_usm: bool = True

    def __post_init__(self) -> None:
        import cv2
        import torch

        ref = import_reference()
        self._torch = torch
        data_opt, model_opt = reference_options(self.spec)
        self._tmp = tempfile.TemporaryDirectory(prefix="srdistill-reference-")
        # The dataset draws the kernels in __getitem__ after loading a GT file; a tiny one keeps that cheap (its
        # pixels are not used: the HR under test replaces 'gt').
        cv2.imwrite(os.path.join(self._tmp.name, "tiny.png"), np.zeros((8, 8, 3), np.uint8))
        with open(os.path.join(self._tmp.name, "meta.txt"), "w") as f:
            f.write("tiny.png\n")
        self._dataset = ref.Dataset({"io_backend": {"type": "disk"}, "dataroot_gt": self._tmp.name,
                                     "meta_info": os.path.join(self._tmp.name, "meta.txt"), "use_hflip": False,
                                     "use_rot": False, **data_opt})
        # The model is built without its networks (its __init__ needs CUDA): only what feed_data uses.
        model = ref.Model.__new__(ref.Model)
        model.opt = model_opt
        model.device = torch.device("cpu")
        model.is_train = True
        model.jpeger = ref.DiffJPEG(differentiable=False)
        model.usm_sharpener = _ReusedUSM(ref.USMSharp()) if self.reuse_usm else ref.USMSharp()
        model._dequeue_and_enqueue = types.MethodType(lambda self: None, model)  # GPU pool of finished pairs
        self._model = model
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

    def close(self) -> None:
        self._tmp.cleanup()

    def draw_kernels(self) -> dict[str, np.ndarray]:
        """One draw of RealESRGANDataset's kernels alone: kernel1, kernel2, sinc_kernel (21x21 float32; the
        final sinc is a unit pulse when not drawn)."""
        d = self._dataset[0]
        return {k: d[k].numpy() for k in ("kernel1", "kernel2", "sinc_kernel")}

    def __call__(self, hr: np.ndarray) -> np.ndarray:
        """The reference's uint8 LR of `hr` (one fresh random draw)."""
        torch = self._torch
        h, w = hr.shape[:2]
        s = self.spec.scale
        if h != w or h % s:
            raise ValueError(f"the reference needs a square HR with sides a multiple of {s}, got {h}x{w}")
        self._model.opt["gt_size"] = h
        gt = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).float().div(255.0)[None]
        with torch.no_grad():
            d = self._dataset[0]
            self._model.feed_data({"gt": gt, "kernel1": d["kernel1"][None], "kernel2": d["kernel2"][None],
                                   "sinc_kernel": d["sinc_kernel"][None]})
            lq = self._model.lq[0].permute(1, 2, 0).numpy()
        return np.clip(np.rint(lq * 255.0), 0, 255).astype(np.uint8)
