"""Grid encoder + any-point decoder trained together (the original never trained either).

With the decoder's linear skip path on (``decoder.skip_patch_size``), the two halves start as an
exact inverse pair: the encoder's patch embedding is an orthogonal map scaled so the latent's RMS
equals the normalised field's, and the decoder's unpatch is its pseudo-inverse.  Reconstruction
is then lossless (to float32 rounding) before any training, and the latent is a well-conditioned
linear image of the field; training adds what the nonlinear parts can contribute on top.
"""

from __future__ import annotations

import torch
from torch import nn

from ups_kedro.models.autoencoder_config import (
    AnyPointDecoderConfig,
    AutoencoderConfig,
    GridEncoderConfig,
)
from ups_kedro.models.decoder import AnyPointDecoder
from ups_kedro.models.encoder import GridEncoder


class Autoencoder(nn.Module):
    """``u [B, *grid, C] -> z [B, N, D] -> u_hat [B, *grid, C]``."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = GridEncoder(cfg.encoder)
        self.decoder = AnyPointDecoder(cfg.decoder)
        if cfg.decoder.skip_patch_size:
            self._init_inverse_pair()

    @torch.no_grad()
    def _init_inverse_pair(self) -> None:
        """Encoder patch embedding ``W`` orthogonal (scaled), decoder unpatch ``pinv(W)``.

        ``W`` ``[D, C p^s]`` has orthonormal columns times ``sqrt(D / (C p^s))`` when
        ``D >= C p^s`` (latent RMS = field RMS), so ``pinv(W) W = I``: the skip path inverts
        the encoder exactly (with ``D < C p^s`` it has orthonormal rows: a lossy projection).
        The encoder's positional features and biases start at zero (they would be a
        field-independent offset the unpatch cannot remove); the stem is the identity at init
        and the decoder's other outputs start at zero, so the whole model is.  ``W`` is drawn
        from its own generator seeded with ``torch.initial_seed()``: the latent basis follows
        the seed, not how much of the global random stream the decoder's modules consumed.
        """
        proj, unpatch = self.encoder.proj, self.decoder.unpatch
        k = self.cfg.encoder.patch_channels
        d = proj.weight.shape[0]
        w = torch.empty(d, k)
        nn.init.orthogonal_(w, generator=torch.Generator().manual_seed(torch.initial_seed()))
        w *= (max(d, k) / k) ** 0.5
        proj.weight.zero_()
        proj.weight[:, :k] = w
        proj.bias.zero_()
        unpatch.weight.copy_(torch.linalg.pinv(w))
        unpatch.bias.zero_()

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """``u [B, *grid_shape, C]`` -> ``z [B, N, D]``."""
        return self.encoder(u)

    def decode(self, z: torch.Tensor, grid_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """``z [B, N, D]`` -> ``[B, *grid_shape, C]`` (default: the encoder's grid)."""
        shape = self.cfg.encoder.grid_shape if grid_shape is None else grid_shape
        return self.decoder.decode_grid(z, shape)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u [B, *grid_shape, C]`` -> ``(z [B, N, D], u_hat [B, *grid_shape, C])``."""
        z = self.encode(u)
        return z, self.decode(z)


__all__ = ["AnyPointDecoderConfig", "Autoencoder", "AutoencoderConfig", "GridEncoderConfig"]
