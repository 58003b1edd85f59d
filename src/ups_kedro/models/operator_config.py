"""The latent operator's configuration (torch-free: stage configs import it without torch).

It is both the ``operator.model`` block of ``parameters_operator.yml`` and the config a
checkpoint stores, so there is one default per key, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from ups_kedro.config import Checked, bounded, require
from ups_kedro.models.token_grid import tokens_per_axis

Architecture = Literal["pdet_unet", "pdet_stack", "conv_stack"]
Attention = Literal["relpos", "grouped"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
ATTENTIONS: tuple[str, ...] = get_args(Attention)


@dataclass(frozen=True, kw_only=True)
class LatentOperatorConfig(Checked):
    """Hyper-parameters of :class:`LatentOperator`.

    Attributes:
        latent_dim: token width ``D`` (``None`` in the stage's ``model:`` block: follows the
            latents, set by the node).
        latent_tokens: ``N`` (``None``: follows the latents); for ``pdet_unet`` the tokens per
            row (``N`` in 1D, ``sqrt(N)`` in 2D) must be divisible by ``2 ** (len(depths) - 1)``.
        hidden_dim: width inside the core; divisible by ``group_size``.
        group_size: ``attention: grouped`` only: channels per attention group; divisible by
            ``num_heads``.
        num_heads: ``relpos``: heads of width ``hidden_dim // num_heads``; ``grouped``: heads
            per group (width ``group_size // num_heads``).
        attention: ``"relpos"`` (multi-head, periodic relative-position bias: shift-equivariant
            and position-aware) or ``"grouped"`` (channel-separated, position-blind; the
            original's form).
        window: ``relpos`` only: attend only to tokens within this periodic distance along each
            token axis (at every U-Net level); ``None``: global attention.
        time_embed_dim: hidden width of the ``dt`` embedding MLP.
        architecture: ``"pdet_unet"`` (U-shaped, one level per ``depths`` entry),
            ``"pdet_stack"`` (``sum(depths)`` blocks at full resolution) or ``"conv_stack"``
            (``sum(depths)`` residual blocks of periodic convolutions over the token grid: local
            token mixing, for PDEs whose information travels a few tokens per step, e.g.
            Burgers; ``group_size``/``num_heads`` are then unused and not checked).
        kernel_size: odd width of the ``conv_stack`` convolutions along every token axis.
        depths: blocks per level (down path and bottleneck; the up path mirrors the down path).
        mlp_ratio: block MLP width as a multiple of ``hidden_dim``.
        dropout: dropout in attention and MLPs.
        spatial_dims: layout of the tokens, as produced by the encoder (set by the node): 1 (a
            periodic row) or 2 (a periodic ``sqrt(N) x sqrt(N)`` grid, row-major).  Only the
            U-Net's token resampling uses it: pairs are averaged along rows and upsampling wraps
            within a row.
    """

    WHERE: ClassVar[str] = "latent_operator"
    #: Sizes that follow the data: ``None`` in a stage's ``model:`` block, set by its node.
    FOLLOWS_DATA: ClassVar[tuple[str, ...]] = ("latent_dim", "latent_tokens")

    latent_dim: int | None = bounded(None, ge=1)
    latent_tokens: int | None = bounded(None, ge=1)
    hidden_dim: int = bounded(ge=1)
    group_size: int = bounded(ge=1)
    num_heads: int = bounded(ge=1)
    time_embed_dim: int = bounded(ge=1)
    architecture: Architecture = "pdet_unet"
    depths: tuple[int, ...] = bounded((1, 1, 1), ge=0)
    mlp_ratio: float = bounded(2.0, gt=0)
    dropout: float = bounded(0.0, ge=0, lt=1)
    spatial_dims: int = bounded(1, ge=1, le=2)
    kernel_size: int = bounded(5, ge=1)
    attention: Attention = "relpos"
    window: int | None = bounded(None, ge=1, note="(null: global attention)")

    def check(self, where: str) -> None:
        """Checks between fields (the bounds above are checked by the parser)."""
        if self.architecture != "conv_stack" and self.attention == "relpos":
            require(self.hidden_dim % self.num_heads == 0,
                    f"{where}.num_heads={self.num_heads} must divide "
                    f"hidden_dim={self.hidden_dim}")
        if self.architecture != "conv_stack" and self.attention == "grouped":
            require(self.hidden_dim % self.group_size == 0,
                    f"{where}.group_size={self.group_size} must divide "
                    f"hidden_dim={self.hidden_dim}")
            require(self.group_size % self.num_heads == 0,
                    f"{where}.num_heads={self.num_heads} must divide "
                    f"group_size={self.group_size}")
        require(len(self.depths) >= 1 and sum(self.depths) >= 1,
                f"{where}.depths must be a non-empty list of non-negative ints with a positive "
                f"sum, got {self.depths}")
        require(int(self.hidden_dim * self.mlp_ratio) >= 1,
                f"{where}.mlp_ratio must give a positive MLP width, got {self.mlp_ratio}")
        require(self.kernel_size % 2 == 1,
                f"{where}.kernel_size must be a positive odd int (centred periodic padding), "
                f"got {self.kernel_size}")
        if self.latent_tokens is None:
            return  # a stage's model block: the token checks run when the node fills it in
        if self.spatial_dims == 2:
            require(tokens_per_axis(self.latent_tokens, 2) >= 1,
                    f"{where}.latent_tokens={self.latent_tokens} must be a perfect square when "
                    "spatial_dims=2")
        if self.architecture == "pdet_unet":
            factor = 2 ** (len(self.depths) - 1)
            require(self.row_length % factor == 0,
                    f"{where}.latent_tokens={self.latent_tokens} ({self.row_length} per row) "
                    f"must be divisible by 2**(len(depths)-1)={factor} for architecture "
                    f"'pdet_unet' with depths={self.depths}")

    @property
    def rows(self) -> int:
        """Rows of the token layout: 1 in 1D, ``sqrt(N)`` in 2D."""
        assert self.latent_tokens is not None, "latent_tokens follows the data: set it first"
        return 1 if self.spatial_dims == 1 else max(tokens_per_axis(self.latent_tokens, 2), 1)

    @property
    def row_length(self) -> int:
        """Tokens per row at full resolution."""
        assert self.latent_tokens is not None, "latent_tokens follows the data: set it first"
        return self.latent_tokens // self.rows
