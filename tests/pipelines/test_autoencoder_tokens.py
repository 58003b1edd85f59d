"""The token-count check speaks in the user's key and the data's dimension."""

import pytest

from ups_kedro.config import ConfigError
from ups_kedro.models.builders import check_token_grid


@pytest.mark.parametrize(("tokens", "dims"), [(32, 1), (16, 2), (64, 3)])
def test_grid_counts_pass(tokens: int, dims: int) -> None:
    check_token_grid(tokens, dims)


@pytest.mark.parametrize(("tokens", "dims", "kind"),
                         [(8, 2, "perfect square"), (0, 1, "positive integer"),
                          (10, 3, "perfect cube")])
def test_bad_counts_name_the_user_key(tokens: int, dims: int, kind: str) -> None:
    with pytest.raises(ConfigError, match=rf"autoencoder\.latent\.tokens={tokens} must be a {kind}"):
        check_token_grid(tokens, dims)
