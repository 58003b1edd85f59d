"""Configurations of the grid encoder, the any-point decoder and their pair (torch-free).

:class:`GridEncoderConfig` and :class:`AnyPointDecoderConfig` are the ``encoder:`` and
``decoder:`` blocks of ``parameters_autoencoder.yml`` (and of ``steady_prior.autoencoder``) and
the configs a checkpoint stores, so there is one default per key, here.  Their sizes that follow
the data or the ``latent:`` block (``FOLLOWS_DATA``) stay ``None`` in the parameters file and
are filled in by the stage's node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from ups_kedro.config import Checked, bounded, require
from ups_kedro.models.token_grid import tokens_per_axis

LocalMode = Literal["blend", "cell"]
LOCAL_MODES: tuple[str, ...] = get_args(LocalMode)


@dataclass(frozen=True)
class LatentConfig(Checked):
    """The latent layout every later stage uses: ``tokens`` × ``dim`` per frame.

    ``tokens: null`` follows the data: one token per encoder patch (``prod(n // patch_size)``
    over the grid: 256 points in patches of 8 give 32 tokens in 1D, 64×64 give 8×8 in 2D), so
    switching the system between 1D and 2D needs no other key changed.
    """

    dim: int = bounded(16, ge=1)
    tokens: int | None = bounded(None, ge=1)


@dataclass(frozen=True, kw_only=True)
class GridEncoderConfig(Checked):
    """Hyper-parameters of :class:`GridEncoder` (one default per key, here).

    Attributes:
        in_channels: physical fields ``C``.
        spatial_dims: 1 or 2.
        grid_shape: grid the encoder accepts, e.g. ``(256,)`` or ``(64, 64)``.
        patch_size: pixel-unshuffle factor along every axis.  When one token cell holds more
            than one patch, the average pooling mixes them and the latent can no longer hold
            every grid value; ``patch_size = grid / tokens per axis`` (one patch per token,
            with ``latent_dim >= C * patch_size**s``) keeps the encoder injective at init
            (one patch per token measured better than several).
        latent_dim: token width ``D``.
        latent_tokens: ``N``; in 2D a perfect square (tokens form a ``sqrt(N) x sqrt(N)`` grid).
        stem_hidden: width of the residual conv stem.
        stem_layers: convolutions in the stem (0 disables it).
        fourier_freqs: frequencies of the positional features of the patch centres.
    """

    WHERE: ClassVar[str] = "grid_encoder"
    FOLLOWS_DATA: ClassVar[tuple[str, ...]] = (
        "in_channels", "spatial_dims", "grid_shape", "latent_dim", "latent_tokens")

    in_channels: int | None = bounded(None, ge=1)
    spatial_dims: int | None = bounded(None, ge=1, le=2)
    grid_shape: tuple[int, ...] | None = bounded(None, ge=1)
    patch_size: int = bounded(ge=1)
    latent_dim: int | None = bounded(None, ge=1)
    latent_tokens: int | None = bounded(None, ge=1)
    stem_hidden: int = bounded(ge=1)
    stem_layers: int = bounded(2, ge=0)
    fourier_freqs: tuple[float, ...] = bounded((1.0, 2.0), gt=0)

    def check(self, where: str) -> None:
        """Checks between fields (the bounds above are checked by the parser)."""
        if self.spatial_dims is None or self.grid_shape is None or self.latent_tokens is None:
            return  # a stage's block: checked once the node has filled in the data's sizes
        require(len(self.grid_shape) == self.spatial_dims,
                f"{where}.grid_shape must have spatial_dims={self.spatial_dims} entries, got "
                f"{self.grid_shape}")
        require(all(n % self.patch_size == 0 for n in self.grid_shape),
                f"{where}.grid_shape {self.grid_shape} must be divisible by "
                f"patch_size={self.patch_size}")
        side = tokens_per_axis(self.latent_tokens, self.spatial_dims)
        require(side >= 1, f"{where}.latent_tokens must be a positive perfect power "
                f"{self.spatial_dims} (tokens form a grid), got {self.latent_tokens}")
        patches = [n // self.patch_size for n in self.grid_shape]
        require(all(p % side == 0 for p in patches),
                f"{where}.latent_tokens={self.latent_tokens} ({side} per axis) must divide the "
                f"patch grid {tuple(patches)} evenly (equal pooling cells keep token positions "
                "exact)")

    @property
    def patch_channels(self) -> int:
        """Channels after pixel-unshuffle: ``C * p**s``."""
        assert self.in_channels is not None and self.spatial_dims is not None
        return self.in_channels * self.patch_size**self.spatial_dims

    @property
    def tokens_per_axis(self) -> int:
        assert self.latent_tokens is not None and self.spatial_dims is not None
        return tokens_per_axis(self.latent_tokens, self.spatial_dims)


@dataclass(frozen=True, kw_only=True)
class AnyPointDecoderConfig(Checked):
    """Hyper-parameters of :class:`AnyPointDecoder`.

    Attributes:
        latent_dim: token width ``D``.
        out_channels: output fields ``C`` (one MLP head each).
        spatial_dims: 1 or 2.
        latent_tokens: ``N``; in 2D a perfect square.
        hidden_dim: query/token width inside the decoder; divisible by ``num_heads``.
        num_layers: cross-attention blocks (0 = local features only).
        num_heads: attention heads.
        fourier_freqs: frequencies of the query and token positional features (periodic).
        mlp_hidden: width of every MLP (block MLPs and the per-field heads).
        local_features: add the interpolated local token features (see module docstring).
        local_freqs: frequencies (in half-periods per token spacing) of the offset features.
        local_mode: how the local features pick tokens (only with ``local_features``):
            ``"blend"`` reads the ``2**s`` tokens at the corners of the cell around the query
            and blends them with (bi)linear weights (continuous in the query position);
            ``"cell"`` reads only the token whose patch contains the query, with the query's
            position *relative to that patch* (local implicit decoding: the token describes
            its own patch, the offset features say where inside it).  ``"cell"`` can be
            discontinuous at patch edges but is near-lossless where ``"blend"`` is not.
        skip_patch_size: points per token and axis of the linear "unpatch" skip path; 0 turns
            it off.  With ``p > 0`` a learned ``Linear(D -> C * p**s)`` turns every token into
            the ``p**s`` grid values of its own patch (the inverse of a linear patch embedding),
            the tokens' patches tile a ``(side * p)**s`` grid, and a query reads that grid by
            periodic (bi)linear interpolation: exact at the grid's cell centres, continuous
            everywhere else, so the decoder stays "any point".  Everything else in the decoder
            then learns a residual on top of it (its output layers start at zero); with
            ``local_features`` false and ``num_layers`` 0 there is no residual and the decoder is
            the skip path alone (linear in ``z``, a small fraction of the cost).
    """

    WHERE: ClassVar[str] = "any_point_decoder"
    FOLLOWS_DATA: ClassVar[tuple[str, ...]] = (
        "latent_dim", "out_channels", "spatial_dims", "latent_tokens")

    latent_dim: int | None = bounded(None, ge=1)
    out_channels: int | None = bounded(None, ge=1)
    spatial_dims: int | None = bounded(None, ge=1, le=2)
    latent_tokens: int | None = bounded(None, ge=1)
    hidden_dim: int = bounded(ge=1)
    num_layers: int = bounded(2, ge=0)
    num_heads: int = bounded(4, ge=1)
    fourier_freqs: tuple[float, ...] = bounded((1.0, 2.0, 4.0, 8.0, 16.0, 32.0), gt=0)
    mlp_hidden: int = bounded(128, ge=1)
    local_features: bool = True
    local_freqs: tuple[float, ...] = bounded((1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0), gt=0)
    local_mode: LocalMode = "blend"
    skip_patch_size: int = bounded(0, ge=0, note="(0 turns the linear skip path off)")

    def check(self, where: str) -> None:
        """Checks between fields (the bounds above are checked by the parser)."""
        if self.latent_tokens is not None and self.spatial_dims is not None:
            require(tokens_per_axis(self.latent_tokens, self.spatial_dims) >= 1,
                    f"{where}.latent_tokens must be a positive perfect power "
                    f"{self.spatial_dims}, got {self.latent_tokens}")
        require(self.hidden_dim % self.num_heads == 0, f"{where}.num_heads={self.num_heads} "
                f"must be >= 1 and divide hidden_dim={self.hidden_dim}")
        require(len(self.fourier_freqs) >= 1, f"{where}.fourier_freqs must not be empty")
        require(self.num_layers >= 1 or self.local_features or self.skip_patch_size > 0,
                f"{where}.num_layers must be >= 1 when local_features is false and "
                "skip_patch_size is 0 (the output would ignore z)")


@dataclass(frozen=True)
class AutoencoderConfig(Checked):
    """The two halves' configs; they must agree on the latent layout and the fields."""

    WHERE: ClassVar[str] = "autoencoder"

    encoder: GridEncoderConfig
    decoder: AnyPointDecoderConfig

    def check(self, where: str) -> None:
        """That the two halves fit together (each half checked itself)."""
        enc, dec = self.encoder, self.decoder
        for name in ("latent_dim", "latent_tokens", "spatial_dims"):
            require(getattr(enc, name) == getattr(dec, name),
                    f"{where}.decoder.{name}={getattr(dec, name)} must equal "
                    f"encoder.{name}={getattr(enc, name)}")
        require(dec.out_channels == enc.in_channels,
                f"{where}.decoder.out_channels={dec.out_channels} must equal "
                f"encoder.in_channels={enc.in_channels}")
        if dec.skip_patch_size and enc.grid_shape is not None:
            require(dec.skip_patch_size == enc.patch_size
                    and all(n // enc.patch_size == enc.tokens_per_axis for n in enc.grid_shape),
                    f"{where}.decoder.skip_patch_size={dec.skip_patch_size} needs one encoder "
                    f"patch per token: patch_size {enc.patch_size} and grid "
                    f"{tuple(enc.grid_shape)} / patch_size = {enc.tokens_per_axis} tokens per "
                    "axis (set skip_patch_size to the patch size and latent_tokens to the "
                    "number of patches, or 0 to turn the skip path off)")
