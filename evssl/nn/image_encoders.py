"""Frozen RGB image encoders f_I for event–image pre-training (ECDP's image branch).

ECDP (Yang et al., ICCV 2023, §3.2) embeds the RGB image paired with every event sample with a **frozen** image
encoder f_I — the CLIP ViT-B/32 image tower (Radford et al. 2021) in the paper, 512-d features extracted offline
(supp.: CLIP ViT-B/32 > ViT-B/16 ≈ RN50 > ViT-L/16 > MAE ViT-B/16) — followed by a trainable linear map h_I.
evssl never downloads weights, so f_I is one of

* precomputed embeddings stored with the events (``StoreWriter.add(..., embedding=...)``; what ECDP does at scale:
  extract CLIP features once, offline, with the tool of your choice), read by :class:`~evssl.data.views.ECDPViews`
  with ``rgb="embedding"`` — no encoder runs during training;
* :class:`FrozenImageEncoder`: any image backbone (a ``class_path`` in YAML, e.g. an ``open_clip`` / ``timm`` /
  ``torchvision`` model or an evssl backbone) with weights from a **local** state-dict file, run on the paired frames
  on the fly (resize, mean/std normalisation, ``forward`` or ``encode_image``);
* :class:`RandomFeatureEncoder`: a deterministic, hand-specified random-feature CNN (weights drawn from a fixed
  seed, not learned, not stored in checkpoints) — a stand-in for CLIP on synthetic data, so that tests and smoke runs
  work offline. It keeps what a generic frozen encoder gives the method — a fixed, instance-specific, spatially
  aware embedding of the frame — but has no semantic knowledge; results with it say nothing about CLIP.

Every encoder here takes frames ``(B, 3, H, W)`` as uint8 in [0, 255] or float in [0, 1], returns ``(B, embed_dim)``
float32, has no trainable parameter and stays in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FrozenImageEncoder",
    "ImageEncoder",
    "RandomFeatureEncoder",
    "as_frozen_image_encoder",
    "load_state_dict_file",
]

#: Input normalisation of OpenAI CLIP image towers.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Input normalisation of ImageNet-trained torchvision / timm models.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float_image(images: Tensor) -> Tensor:
    """Frames as float32 in [0, 1]: uint8 is divided by 255, floating input is passed through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def load_state_dict_file(path: str | Path, prefix: str = "") -> dict[str, Tensor]:
    """A plain state dict from a local file (``torch.load(weights_only=True)``), unwrapping ``{"state_dict": ...}``
    / ``{"model": ...}`` and keeping only (and stripping) keys that start with ``prefix``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"image encoder weights not found: {path} (evssl never downloads weights)")
    state: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path}: no key starts with prefix {prefix!r}")
    return state


class ImageEncoder(nn.Module):
    """Base class: a frozen image encoder ``frames (B, 3, H, W) -> (B, embed_dim)``, always in eval mode."""

    embed_dim: int
    image_size: tuple[int, int] | None = None

    def freeze(self) -> None:
        """No parameter trains; eval mode."""
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ImageEncoder:
        """Stay in eval mode whatever the caller asks (BatchNorm statistics and dropout are frozen)."""
        return super().train(False)

    def _normalized(self, images: Tensor) -> Tensor:
        """Frames ``(B, 3, H, W)`` (uint8 or float in [0, 1]) as float32, resized to ``image_size`` when set
        (bilinear, antialiased) and normalised by the subclass's ``mean`` / ``std`` buffers."""
        x = to_float_image(images)
        if self.image_size is not None and tuple(x.shape[-2:]) != tuple(self.image_size):
            x = F.interpolate(x, size=tuple(self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std


class FrozenImageEncoder(ImageEncoder):
    """Any image backbone as a frozen f_I: ``f_I(I) = g(norm(resize(I)))`` with ``g`` the wrapped module.

    Args:
        backbone: the image model (e.g. ``open_clip``'s ``CLIP`` / ``VisionTransformer``, a ``timm`` or
            ``torchvision`` model with its classifier removed, an evssl backbone).
        weights: local state-dict file loaded (strictly) into ``backbone``; ``None`` keeps its current weights.
        weights_prefix: keep only the keys with this prefix and strip it (e.g. ``"visual."`` for a full CLIP file).
        embed_dim: output size; ``None`` probes it with one forward of a blank image.
        image_size: (H, W) or an int the frames are resized to (bilinear, antialiased); ``None`` = as given.
        mean, std: per-channel normalisation after scaling to [0, 1] (default: CLIP's).
        call: ``"forward"`` or ``"encode_image"`` (CLIP-style models).
        output_key: when the backbone returns a dict, the entry to use (evssl backbones: ``"pooled"``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        weights: str | None = None,
        weights_prefix: str = "",
        embed_dim: int | None = None,
        image_size: int | tuple[int, int] | None = 224,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        call: Literal["forward", "encode_image"] = "forward",
        output_key: str = "pooled",
    ) -> None:
        super().__init__()
        self.backbone = backbone
        if weights is not None:
            backbone.load_state_dict(load_state_dict_file(weights, weights_prefix), strict=True)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        if call not in ("forward", "encode_image"):
            raise ValueError(f"call must be 'forward' or 'encode_image', got {call!r}")
        self.call = call
        self.output_key = output_key
        self.freeze()
        if embed_dim is None:
            size = self.image_size or (224, 224)
            with torch.no_grad():
                embed_dim = int(self.forward(torch.zeros(1, 3, *size)).shape[-1])
        self.embed_dim = int(embed_dim)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``(B, embed_dim)`` float32 embeddings of frames ``(B, 3, H, W)`` (uint8 or float in [0, 1])."""
        x = self._normalized(images)
        fn = self.backbone.encode_image if self.call == "encode_image" else self.backbone
        out = fn(x)
        if isinstance(out, dict):
            out = out[self.output_key]
        if out.ndim > 2:
            out = out.flatten(1)
        return out.float()


class RandomFeatureEncoder(ImageEncoder):
    r"""Deterministic random-feature CNN: a fixed, offline stand-in for a frozen image encoder on synthetic data.

    .. math::

        f(I) = P\,\mathrm{vec}\Big(\mathrm{AvgPool}_{g\times g}\,\mathrm{ReLU}\big(W_2 * \mathrm{MaxPool}_2\,
        \mathrm{ReLU}(W_1 * \tfrac{I - \mu}{\sigma})\big)\Big)

    with :math:`W_1` (``width`` filters 5×5), :math:`W_2` (``2·width`` filters 3×3) and the projection :math:`P`
    (``embed_dim`` × ``2·width·g²``) drawn from :math:`\mathcal N(0, 2/\text{fan-in})` with a private generator seeded
    by ``seed`` — the same numbers on every machine and process, independent of the global RNG — and
    :math:`\mu, \sigma` ImageNet statistics. The weights are non-persistent buffers: regenerated from ``seed``, never
    trained, never in a checkpoint. Random convolutional features with spatial pooling preserve colour, texture and
    coarse layout, so two frames of the same scene embed close together and different scenes far apart (Jarrett et
    al. 2009; Saxe et al. 2011) — enough for ECDP's image branch to have a non-trivial target on synthetic data.
    """

    def __init__(
        self,
        embed_dim: int = 512,
        width: int = 32,
        grid: int = 4,
        image_size: int | tuple[int, int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if embed_dim < 1 or width < 1 or grid < 1:
            raise ValueError("embed_dim, width and grid must be positive")
        self.embed_dim = int(embed_dim)
        self.width = int(width)
        self.grid = int(grid)
        self.seed = int(seed)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        g = torch.Generator().manual_seed(self.seed)
        w1 = torch.randn(width, 3, 5, 5, generator=g) * (2.0 / (3 * 25)) ** 0.5
        w2 = torch.randn(2 * width, width, 3, 3, generator=g) * (2.0 / (width * 9)) ** 0.5
        feat = 2 * width * grid * grid
        proj = torch.randn(embed_dim, feat, generator=g) * (1.0 / feat) ** 0.5
        self.register_buffer("w1", w1, persistent=False)
        self.register_buffer("w2", w2, persistent=False)
        self.register_buffer("proj", proj, persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, width={self.width}, grid={self.grid}, seed={self.seed}"

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        """``(B, embed_dim)`` float32 features of frames ``(B, 3, H, W)`` (uint8 or float in [0, 1])."""
        x = self._normalized(images)
        x = F.max_pool2d(F.relu(F.conv2d(x, self.w1, padding=2)), 2, ceil_mode=True)
        x = F.relu(F.conv2d(x, self.w2, padding=1))
        x = F.adaptive_avg_pool2d(x, self.grid).flatten(1)
        return x @ self.proj.t()


def as_frozen_image_encoder(encoder: nn.Module | None, weights: str | None = None) -> ImageEncoder | None:
    """An :class:`ImageEncoder` from whatever a config gives: ``None`` stays ``None``; an :class:`ImageEncoder` is
    frozen (and gets ``weights`` loaded into it, strictly); any other module is wrapped in
    :class:`FrozenImageEncoder` with ``weights``."""
    if encoder is None:
        if weights is not None:
            raise ValueError("image_encoder_weights given without an image_encoder")
        return None
    if isinstance(encoder, ImageEncoder):
        if weights is not None:
            target = encoder.backbone if isinstance(encoder, FrozenImageEncoder) else encoder
            target.load_state_dict(load_state_dict_file(weights), strict=True)
        encoder.freeze()
        return encoder
    return FrozenImageEncoder(encoder, weights=weights)
