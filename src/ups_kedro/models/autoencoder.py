"""Grid encoder + any-point decoder trained together (the original never trained either)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ups_kedro.models.decoder import AnyPointDecoder, AnyPointDecoderConfig
from ups_kedro.models.encoder import GridEncoder, GridEncoderConfig
from ups_kedro.models.layers import check


@dataclass(frozen=True)
class AutoencoderConfig:
    """The two halves' configs; they must agree on the latent layout and the fields."""

    encoder: GridEncoderConfig
    decoder: AnyPointDecoderConfig

    def validate(self, where: str = "autoencoder") -> None:
        """Validate both halves, then that they fit together (errors name the field)."""
        self.encoder.validate(f"{where}.encoder")
        self.decoder.validate(f"{where}.decoder")
        enc, dec = self.encoder, self.decoder
        for name in ("latent_dim", "latent_tokens", "spatial_dims"):
            check(
                getattr(enc, name) == getattr(dec, name),
                where,
                f"decoder.{name}",
                f"={getattr(dec, name)} must equal encoder.{name}={getattr(enc, name)}",
            )
        check(
            dec.out_channels == enc.in_channels,
            where,
            "decoder.out_channels",
            f"={dec.out_channels} must equal encoder.in_channels={enc.in_channels}",
        )


class Autoencoder(nn.Module):
    """``u [B, *grid, C] -> z [B, N, D] -> u_hat [B, *grid, C]``."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = GridEncoder(cfg.encoder)
        self.decoder = AnyPointDecoder(cfg.decoder)

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


__all__ = ["Autoencoder", "AutoencoderConfig"]
