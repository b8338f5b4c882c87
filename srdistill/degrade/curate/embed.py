"""Image embeddings for near-duplicate detection that perceptual hashes miss (crops, resizes, recolourings).

`--embed timm:NAME` embeds each whole image with a timm model (pretrained weights through timm's Hugging Face
download, so online by default and refused under --offline): the image is resized to the model's input size
(no crop, so a cropped copy keeps most of the same content), normalised with the model's mean and std, passed
through the network without its classifier, and the pooled feature is L2-normalised. `--dedup embed:T` then
links images whose cosine similarity is at least T.
"""

from __future__ import annotations

import numpy as np

from srdistill.core.errors import UserError


class Embedder:
    """A timm backbone without its head; `pretrained=False` builds it with seeded random weights (tests)."""

    def __init__(self, spec: str, pretrained: bool = True):
        kind, _, name = spec.partition(":")
        if kind != "timm" or not name:
            raise UserError(f"--embed must be timm:MODEL (a timm model name, e.g. timm:resnet50), got {spec!r}.")
        import timm
        import torch

        from srdistill.core.iqa import weights

        if name not in timm.list_models() and name.split(".")[0] not in timm.list_models():
            raise UserError(f"--embed {spec}: timm has no model {name!r} (see `timm.list_models()`).")
        if not pretrained:
            torch.manual_seed(0)  # the same random weights in every worker
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0).eval()
        except Exception as exc:  # weights that could not be fetched or found
            raise UserError(f"embedding model {spec} cannot be used: {weights.explain_build_error(exc)}.") from exc
        cfg = self.model.pretrained_cfg
        self.size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
        self.mean = np.asarray(cfg.get("mean", (0.485, 0.456, 0.406)), np.float32)
        self.std = np.asarray(cfg.get("std", (0.229, 0.224, 0.225)), np.float32)

    def embed(self, img: np.ndarray) -> list[float]:
        import cv2
        import torch

        x = cv2.resize(img, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        x = (x - self.mean) / self.std
        with torch.no_grad():
            v = self.model(torch.from_numpy(x).permute(2, 0, 1)[None]).flatten().numpy().astype(np.float64)
        return (v / (np.linalg.norm(v) or 1.0)).tolist()


def cosine(a, b) -> float:
    return float(np.dot(np.asarray(a, np.float64), np.asarray(b, np.float64)))
