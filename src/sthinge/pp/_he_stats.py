"""``"he-stats"``: a weight-free histology encoder of colour, stain and texture statistics at several scales.

The encoder sees a window of twice the tile side around each spot, resampled to 160 px (so the tile itself
is the central 80 px; 1.4 µm per pixel for the default 112 µm tile). From it, per-pixel maps are computed:

- colour: R, G, B, saturation, optical density (OD) summed over channels, tissue (not background);
- stains: haematoxylin, eosin and residual concentrations by colour deconvolution (Ruifrok & Johnston's
  H&E-DAB matrix), and a nuclei mask (haematoxylin above a fixed threshold);
- texture: gradient energy at two scales, local variance, Laplacian-of-Gaussian of haematoxylin at two
  (nuclear) scales, Gabor energy at two wavelengths (orientation-averaged) and its anisotropy.

Each map is summarised by its mean over three concentric regions — the disc inscribed in the tile (diameter
one tile side), the ring out to a diameter of 1.5 tile sides, the ring out to 2 tile sides — and its standard
deviation in the inner disc and over the whole window; haematoxylin, eosin and OD add quantiles (10/50/90 %)
in the inner disc (104 features in all, named by ``feature_names()``).
"""

from __future__ import annotations

import math

import numpy as np

INPUT_SIZE = 160
WINDOW_FACTOR = 2.0  # window side / tile side
NUCLEI_H_THRESHOLD = 0.35  # haematoxylin concentration (OD units) above which a pixel counts as nuclear

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB/residual), normalised
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)

MAPS = (
    "R", "G", "B", "saturation", "od", "tissue", "H", "E", "D", "nuclei",
    "grad1", "grad2", "locvar", "log_h2", "log_h4", "gabor4", "gabor8", "aniso4", "aniso8",
)  # fmt: skip
REGIONS = ("disc", "ring1", "ring2")
QUANTILE_MAPS = ("H", "E", "od")
QUANTILES = (0.1, 0.5, 0.9)


def feature_names() -> list[str]:
    names = [f"{m}_mean_{r}" for m in MAPS for r in REGIONS]
    names += [f"{m}_std_disc" for m in MAPS] + [f"{m}_std_all" for m in MAPS]
    names += [f"{m}_q{int(q * 100)}_disc" for m in QUANTILE_MAPS for q in QUANTILES]
    return names


def _gaussian_kernel(sigma: float):
    import torch

    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _build():
    import torch
    from torch import nn

    class HEStats(nn.Module):
        """Hand-crafted H&E features; input ``(B, 3, 224, 224)`` RGB in [0, 1], output ``(B, D)``."""

        input_size = INPUT_SIZE
        window_factor = WINDOW_FACTOR

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("hed_from_rgb", torch.tensor(_HED_FROM_RGB, dtype=torch.float32), persistent=False)
            n = INPUT_SIZE
            yy, xx = torch.meshgrid(torch.arange(n) + 0.5 - n / 2, torch.arange(n) + 0.5 - n / 2, indexing="ij")
            r = torch.sqrt(yy**2 + xx**2) / (n / WINDOW_FACTOR)  # in tile sides
            masks = torch.stack([(r < 0.5), (r >= 0.5) & (r < 0.75), (r >= 0.75) & (r < 1.0)]).float()
            self.register_buffer("masks", masks.reshape(3, -1), persistent=False)  # (3, N*N)
            self.register_buffer("disc_idx", torch.nonzero(masks[0].reshape(-1)).squeeze(1), persistent=False)
            # Gabor bank at wavelength 4 px, 4 orientations, complex; wavelength 8 px = same bank on a 2x downsample
            lam, sigma = 4.0, 0.56 * 4.0
            half = int(math.ceil(3 * sigma))
            y, x = torch.meshgrid(torch.arange(-half, half + 1.0), torch.arange(-half, half + 1.0), indexing="ij")
            env = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
            kernels = []
            for theta in (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4):
                xr = x * math.cos(theta) + y * math.sin(theta)
                re, im = env * torch.cos(2 * math.pi * xr / lam), env * torch.sin(2 * math.pi * xr / lam)
                re = re - re.sum() * env / env.sum()
                kernels += [re / re.abs().sum(), im / im.abs().sum()]
            self.register_buffer("gabor", torch.stack(kernels)[:, None], persistent=False)  # (8, 1, k, k)
            sob = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
            self.register_buffer("sobel", torch.stack([sob, sob.T])[:, None], persistent=False)  # (2, 1, 3, 3)
            self.register_buffer("g2", _gaussian_kernel(2.0), persistent=False)
            self.register_buffer("g4", _gaussian_kernel(4.0), persistent=False)
            lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
            self.register_buffer("lap", lap[None, None], persistent=False)
            self.register_buffer("box5", torch.full((1, 1, 5, 5), 1.0 / 25), persistent=False)

        @property
        def dim(self) -> int:
            return len(feature_names())

        @staticmethod
        def _conv(x, w, pad):
            import torch.nn.functional as F

            return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), w)

        def forward(self, rgb):  # (B, 3, N, N) in [0, 1]
            import torch
            import torch.nn.functional as F

            b, _, n, _ = rgb.shape
            od = -torch.log((rgb * 255.0 + 1.0) / 256.0)  # (B, 3, N, N)
            hed = torch.einsum("bcyx,cd->bdyx", od, self.hed_from_rgb).clamp_min(0.0)
            mx, mn = rgb.max(1, keepdim=True).values, rgb.min(1, keepdim=True).values
            sat = (mx - mn) / mx.clamp_min(1e-3)
            od_sum = od.sum(1, keepdim=True)
            tissue = ((od_sum > 0.25) | (sat > 0.1)).float()
            gray = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
            h = hed[:, :1]
            nuclei = (h > NUCLEI_H_THRESHOLD).float()

            def grad(x):
                g = self._conv(x, self.sobel, 1)
                return torch.sqrt((g**2).sum(1, keepdim=True) + 1e-12)

            def blur(x, g):
                k = g.numel()
                x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), g.view(1, 1, 1, k))
                return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="reflect"), g.view(1, 1, k, 1))

            grad1 = grad(gray)
            grad2 = F.interpolate(grad(F.avg_pool2d(gray, 2)), size=(n, n), mode="nearest")
            mean5 = self._conv(gray, self.box5, 2)
            locvar = (self._conv(gray * gray, self.box5, 2) - mean5**2).clamp_min(0.0)
            log_h2 = -self._conv(blur(h, self.g2), self.lap, 1) * 4.0
            log_h4 = -self._conv(blur(h, self.g4), self.lap, 1) * 16.0

            def gabor(x):
                g = self._conv(x, self.gabor, self.gabor.shape[-1] // 2)  # (B, 8, n, n)
                return torch.sqrt(g[:, 0::2] ** 2 + g[:, 1::2] ** 2 + 1e-12)  # (B, 4, n, n)

            e4 = gabor(gray)
            e8 = F.interpolate(gabor(F.avg_pool2d(gray, 2)), size=(n, n), mode="nearest")
            gabor4, gabor8 = e4.mean(1, keepdim=True), e8.mean(1, keepdim=True)
            aniso4 = (e4.max(1, keepdim=True).values - e4.min(1, keepdim=True).values) / (gabor4 + 1e-3)
            aniso8 = (e8.max(1, keepdim=True).values - e8.min(1, keepdim=True).values) / (gabor8 + 1e-3)
            maps = torch.cat(
                [
                    rgb,
                    sat,
                    od_sum,
                    tissue,
                    hed,
                    nuclei,
                    grad1,
                    grad2,
                    locvar,
                    log_h2,
                    log_h4,
                    gabor4,
                    gabor8,
                    aniso4,
                    aniso8,
                ],
                dim=1,
            ).flatten(2)  # (B, M, N*N)
            w = torch.cat([self.masks, torch.ones_like(self.masks[:1])])  # (4, N*N): disc, ring1, ring2, all
            w = w / w.sum(1, keepdim=True)
            m1 = maps @ w.T  # (B, M, 4)
            m2 = (maps * maps) @ w[[0, 3]].T  # (B, M, 2)
            means = m1[..., :3]
            std = (m2 - m1[..., [0, 3]] ** 2).clamp_min(0.0).sqrt()
            std_disc, std_all = std[..., 0], std[..., 1]
            qmaps = torch.cat([hed[:, :2], od_sum], dim=1).flatten(2)[:, :, self.disc_idx]
            q = torch.quantile(qmaps, torch.tensor(QUANTILES, device=rgb.device), dim=-1).permute(1, 2, 0)
            feats = torch.cat([means.reshape(b, -1), std_disc, std_all, q.reshape(b, -1)], dim=1)
            return feats

    return HEStats


def he_stats_encoder():
    """A fresh ``HEStats`` module (no weights)."""
    return _build()()
