"""The steady prior's configuration (torch-free: the stage config imports it without torch).

It is both the ``steady_prior.model`` block of ``parameters_steady_prior.yml`` and the config a
checkpoint stores, so there is one default per key, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from ups_kedro.config import Checked, bounded, require

Architecture = Literal["mlp", "token_mixer"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)


@dataclass(frozen=True, kw_only=True)
class SteadyPriorConfig(Checked):
    """Hyper-parameters of :class:`SteadyPrior`.

    Attributes:
        latent_dim: token width ``D`` of ``z`` (``None`` in the stage's ``model:`` block:
            follows the data, as do ``latent_tokens`` and ``cond_dim``).
        latent_tokens: ``N``, tokens per sample (fixed by the encoder).
        cond_dim: token width ``Cc`` of the conditioning ``cond``.
        hidden_dim: width inside the drift; divisible by ``num_heads`` for ``token_mixer``.
        num_steps: refinements ``S`` (the original used 4-6).
        architecture: ``"mlp"`` (per-token drift) or ``"token_mixer"`` (attention over tokens).
        num_layers: ``mlp``: Linear layers of the drift MLP (the original: 3);
            ``token_mixer``: transformer blocks.
        num_heads: attention heads (``token_mixer`` only).
    """

    WHERE: ClassVar[str] = "steady_prior"
    #: Sizes that follow the data: ``None`` in a stage's ``model:`` block, set by its node.
    FOLLOWS_DATA: ClassVar[tuple[str, ...]] = ("latent_dim", "latent_tokens", "cond_dim")

    latent_dim: int | None = bounded(None, ge=1)
    latent_tokens: int | None = bounded(None, ge=1)
    cond_dim: int | None = bounded(None, ge=0)
    hidden_dim: int = bounded(ge=1)
    num_steps: int = bounded(4, ge=1)
    architecture: Architecture = "mlp"
    num_layers: int = bounded(3, ge=1)
    num_heads: int = bounded(4, ge=1)

    def check(self, where: str) -> None:
        """Checks between fields (the bounds above are checked by the parser)."""
        if self.architecture == "token_mixer":
            require(self.hidden_dim % self.num_heads == 0,
                    f"{where}.num_heads={self.num_heads} must divide hidden_dim="
                    f"{self.hidden_dim} for architecture 'token_mixer'")
