"""Configurations of the Stage 2/3 correctors (torch-free: stage configs import them).

:class:`RolloutCorrectorConfig` is ``diff_residual.corrector.model`` and
:class:`DiffusionResidualConfig` is ``diff_residual.model`` in ``parameters_diff_residual.yml``;
each is also the config a checkpoint stores, so there is one default per key, here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from ups_kedro.config import Checked, bounded, require


Architecture = Literal["mlp", "token_mixer"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
Solver = Literal["euler", "heun"]
SOLVERS: tuple[str, ...] = get_args(Solver)
Parameterisation = Literal["edm", "consistency"]
PARAMETERISATIONS: tuple[str, ...] = get_args(Parameterisation)
TauMode = Literal["uniform", "beta"]
TAU_MODES: tuple[str, ...] = get_args(TauMode)


@dataclass(frozen=True, kw_only=True)
class RolloutCorrectorConfig(Checked):
    """Sizes, form and noise levels of a :class:`RolloutCorrector`.

    ``spatial_dims`` 2 treats the ``N`` tokens as a periodic ``sqrt(N) x sqrt(N)`` grid
    (row-major), as the operator does.  ``sigma_min``/``sigma_max`` are relative to the RMS of
    the state being refined.
    """

    WHERE: ClassVar[str] = "rollout_corrector"
    #: Sizes that follow the data: ``None`` in a stage's ``model:`` block, set by its node.
    FOLLOWS_DATA: ClassVar[tuple[str, ...]] = ("latent_dim", "latent_tokens")

    latent_dim: int | None = bounded(None, ge=1)     # None: follows the latents
    latent_tokens: int | None = bounded(None, ge=1)  # None: follows the latents
    spatial_dims: int = bounded(1, ge=1, le=2)       # set by the stage from the operator
    hidden_dim: int = bounded(64, ge=1)
    num_blocks: int = bounded(4, ge=1)
    kernel_size: int = bounded(5, ge=1)
    kind: Literal["deterministic", "refiner"] = "deterministic"
    refine_steps: int = bounded(1, ge=1)
    sigma_min: float = bounded(2.0e-4, gt=0)
    sigma_max: float = bounded(2.0e-3, gt=0)
    num_samples: int = bounded(1, ge=1)

    def check(self, where: str) -> None:
        """Checks between fields (the bounds above are checked by the parser)."""
        require(self.kind == "refiner" or self.refine_steps == 1,
                f"{where}.refine_steps: a deterministic corrector takes 1 step, got "
                f"{self.refine_steps}; use kind: refiner for more")
        if self.spatial_dims == 2 and self.latent_tokens is not None:
            side = math.isqrt(self.latent_tokens)
            require(side * side == self.latent_tokens,
                    f"{where}.latent_tokens={self.latent_tokens} must be a perfect square when "
                    "spatial_dims=2")
        require(self.kernel_size % 2 == 1, f"{where}.kernel_size must be odd (centred periodic "
                f"padding), got {self.kernel_size}")
        require(self.sigma_min <= self.sigma_max, f"{where}.sigma_min: need 0 < sigma_min <= "
                f"sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigmas(self) -> list[float]:
        """Relative noise level of each refinement step (empty for the deterministic form)."""
        if self.kind == "deterministic":
            return []
        k = self.refine_steps
        if k == 1:
            return [self.sigma_max]
        ratio = self.sigma_min / self.sigma_max
        return [self.sigma_max * ratio ** (i / (k - 1)) for i in range(k)]


@dataclass(frozen=True, kw_only=True)
class DiffusionResidualConfig(Checked):
    """Hyper-parameters of :class:`DiffusionResidual` (one default per key, here).

    Attributes:
        latent_dim: token width ``D`` of the residual (``None`` in the stage's ``model:``
            block: follows the latents).
        latent_tokens: ``N`` (the token mixer's position embedding has this length; ``None``:
            follows the latents).
        hidden_dim: hidden width (the original used ``2·latent_dim``).
        architecture: ``"mlp"`` (per token) or ``"token_mixer"`` (attention over tokens).
        num_layers: ``mlp``: linear layers (≥ 2; 3 = the original); ``token_mixer``: blocks.
        num_heads: attention heads (``token_mixer``; must divide ``hidden_dim``).
        cond_dim: width of the conditioning tokens (``None``: ``latent_dim``, i.e. ``ẑ``).
        noise_embed_dim: width of the fixed sinusoidal embedding of ``c_noise(σ)`` (even).
        mlp_ratio: MLP width / ``hidden_dim`` inside the transformer blocks.
        sigma_min, sigma_max, rho, sigma_data: the noise schedule (normalised-residual units).
        parameterisation: ``"edm"`` (stage 2 teacher) or ``"consistency"`` (stage 3 student);
            set by the stage, not the parameters file.
        residual_scale: the residual normaliser: the model works on
            ``(z_next − ẑ)/residual_scale``; set from training statistics by the caller (e.g.
            :func:`ups_kedro.training.teacher_cache.estimate_residual_scale`) and stored here so the
            artifact is self-describing (set by the stage, measured on its training pairs).
    """

    WHERE: ClassVar[str] = "diffusion_residual"
    #: Sizes that follow the data: ``None`` in a stage's ``model:`` block, set by its node.
    FOLLOWS_DATA: ClassVar[tuple[str, ...]] = ("latent_dim", "latent_tokens")

    latent_dim: int | None = bounded(None, ge=1)
    latent_tokens: int | None = bounded(None, ge=1)
    hidden_dim: int = bounded(ge=1)
    architecture: Architecture = "mlp"
    num_layers: int = bounded(3, ge=1)
    num_heads: int = bounded(4, ge=1)
    cond_dim: int | None = bounded(None, ge=1)
    noise_embed_dim: int = bounded(16, ge=2)
    mlp_ratio: float = bounded(2.0, gt=0)
    sigma_min: float = bounded(1e-4, gt=0)
    sigma_max: float = bounded(20.0, gt=0)
    sigma_data: float = bounded(1.0, gt=0)
    rho: float = bounded(7.0, gt=0)
    parameterisation: Parameterisation = "edm"
    residual_scale: float = bounded(1.0, gt=0)

    def check(self, where: str) -> None:
        """Checks between fields (the bounds above are checked by the parser)."""
        least = 2 if self.architecture == "mlp" else 1
        require(self.num_layers >= least, f"{where}.num_layers must be >= {least} for "
                f"{self.architecture!r}, got {self.num_layers}")
        if self.architecture == "token_mixer":
            require(self.hidden_dim % self.num_heads == 0, f"{where}.num_heads={self.num_heads} "
                    f"must divide hidden_dim={self.hidden_dim}")
        require(self.noise_embed_dim % 2 == 0,
                f"{where}.noise_embed_dim must be even and >= 2, got {self.noise_embed_dim}")
        require(self.sigma_max > self.sigma_min, f"{where}.sigma_max must be > "
                f"sigma_min={self.sigma_min}, got {self.sigma_max}")

    @property
    def conditioning_dim(self) -> int:
        """``C``: ``cond_dim`` or ``latent_dim``."""
        return self.cond_dim if self.cond_dim is not None else self.latent_dim



@dataclass(frozen=True)
class TauSampling(Checked):
    """How training draws diffusion times: ``uniform`` on [0, 1] or ``Beta(alpha, beta)``.

    The original's golden recipe used ``beta`` with ``alpha = beta = 1.2`` (a mild bump in the
    middle of the σ range).
    """

    WHERE: ClassVar[str] = "tau_sampling"

    mode: TauMode = "uniform"
    alpha: float = bounded(1.2, gt=0)
    beta: float = bounded(1.2, gt=0)
