"""How a recipe's student runs at inference on an image of any size: whole, or in tiles (size, overlap, blending),
and whether its VAE runs tiled. Each recipe declares one per its paper or release (``Recipe.INFERENCE``); the export
and the run's config.json record it, and evaluation runs the student by it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

TOOL_TILE = 512      # the tool's default for a recipe whose source is silent: whole up to this many LR px, tiles beyond
TOOL_OVERLAP = 16    # LR px of real context around each tile
BLENDS = ("crop",)   # each tile keeps its own area; its context ring is discarded (no weighted blending)


@dataclass(frozen=True)
class InferencePolicy:
    tile: int            # tile side in LR pixels; 0 = always the whole image in one pass
    overlap: int         # LR pixels of context read on every side of a tile
    blend: str           # how tiles are joined: one of BLENDS
    vae_tiling: bool     # the student's diffusers VAE encodes/decodes in its own tiles (AutoencoderKL.enable_tiling)
    source: str          # the paper/release sentence it follows, or "unspecified: ..." naming the tool's default

    def __post_init__(self):
        if self.tile < 0 or self.overlap < 0 or self.blend not in BLENDS:
            raise ValueError(f"bad inference policy {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> InferencePolicy:
        return cls(**{k: values[k] for k in ("tile", "overlap", "blend", "vae_tiling", "source")})

    def with_tile(self, tile: int) -> InferencePolicy:
        """The policy with a user's tile size (evaluate --tile) in place of the recipe's."""
        return InferencePolicy(tile, self.overlap, self.blend, self.vae_tiling,
                               f"tile {tile} from the command line; recipe policy: {self.source}")

    @property
    def fingerprint(self) -> str:
        return f"tile={self.tile},overlap={self.overlap},blend={self.blend},vae_tiling={int(self.vae_tiling)}"


def unspecified(why: str) -> InferencePolicy:
    """The tool's default for a recipe whose paper and release do not say how to run large images."""
    return InferencePolicy(TOOL_TILE, TOOL_OVERLAP, "crop", False,
                           f"unspecified ({why}): the tool's default, whole image up to {TOOL_TILE} LR px per side, "
                           f"{TOOL_TILE} LR px tiles with {TOOL_OVERLAP} px context beyond, no VAE tiling")


def apply_vae_tiling(module: nn.Module, policy: InferencePolicy) -> int:
    """Switch the VAE tiling of every diffusers VAE inside ``module`` to the policy's; returns how many were set."""
    count = 0
    for sub in module.modules():
        if hasattr(sub, "enable_tiling") and hasattr(sub, "disable_tiling"):
            (sub.enable_tiling if policy.vae_tiling else sub.disable_tiling)()
            count += 1
    return count
