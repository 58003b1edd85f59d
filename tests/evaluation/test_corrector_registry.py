"""The corrector registry drives the variants: names, order, step counts, notes, parameters."""

from __future__ import annotations

import pytest
import torch

from ups_kedro.config import ConfigError, parse
from ups_kedro.evaluation.suite import GatedParams, VariantParams, build_variants
from ups_kedro.evaluation.surrogate import Surrogate
from ups_kedro.models.registry import build_model
from ups_kedro.stages import CORRECTORS, TRANSIENT_STAGES, checkpoint_datasets, corrector


class Shift(torch.nn.Module):
    def forward(self, z: torch.Tensor, dt: float) -> torch.Tensor:
        return z + 0.1


def _edm() -> torch.nn.Module:
    return build_model("diffusion_residual", {
        "latent_dim": 4, "latent_tokens": 2, "hidden_dim": 8, "num_layers": 2,
        "parameterisation": "consistency", "residual_scale": 1.0}).eval()


def _rollout_corrector() -> torch.nn.Module:
    return build_model("rollout_corrector", {"latent_dim": 4, "latent_tokens": 2}).eval()


def _surrogate(**correctors: torch.nn.Module) -> Surrogate:
    identity = lambda u: u  # noqa: E731 - the "autoencoder" is the identity here
    return Surrogate(encode=identity, decode=identity, operator=Shift(), dt=1.0, time_stride=1,
                     normaliser={"mean": [0.0], "std": [1.0]}, correctors=correctors)


def test_registry_lists_the_transient_stages_and_their_datasets() -> None:
    names = [c.name for c in CORRECTORS]
    assert TRANSIENT_STAGES == ("autoencoder", "operator", *names)
    assert checkpoint_datasets()["operator_checkpoint"] == "operator.checkpoint"
    with pytest.raises(ValueError, match="not a registered corrector stage; registered: "):
        corrector("nope")


def test_every_present_corrector_adds_its_variants_in_registry_order() -> None:
    s = _surrogate(diff_residual=_rollout_corrector(), consistency_distill=_edm())
    variants, notes = build_variants(s, VariantParams(gated=None))
    assert [v.name for v in variants] == [
        "operator", "diff_residual", "consistency_distill_1step", "consistency_distill_2step"]
    assert notes == []
    # An EDM model of a trained-form stage runs at each configured step count instead.
    s = _surrogate(diff_residual=_edm())
    variants, notes = build_variants(s, VariantParams(steps={"diff_residual": (3, 5)},
                                                      gated=None))
    assert [v.name for v in variants] == ["operator", "diff_residual_3step",
                                          "diff_residual_5step"]
    assert notes == ["consistency_distill checkpoint absent: student variants skipped"]


def test_gated_variant_uses_the_named_corrector() -> None:
    s = _surrogate(diff_residual=_rollout_corrector())
    params = parse(VariantParams, {"gated": {"corrector": "diff_residual", "steps": 1}}, "v")
    variants, _ = build_variants(s, params)
    assert variants[-1].name == "gated_diff_residual_1step"
    _, notes = build_variants(s, VariantParams())  # default: the student, absent here
    assert "gated variant skipped: its corrector (consistency_distill) is absent" in notes


def test_step_counts_are_checked_against_the_registry() -> None:
    assert parse(VariantParams, {}, "v").steps_of("consistency_distill") == (1, 2)
    assert parse(VariantParams, {"steps": {"diff_residual": [8]}}, "v").steps_of(
        "consistency_distill") == (1, 2)  # a stage left out keeps its default
    with pytest.raises(ConfigError, match=r"v.steps.nope: not a corrector stage"):
        parse(VariantParams, {"steps": {"nope": [1]}}, "v")
    with pytest.raises(ConfigError, match=r"v.steps.diff_residual must be a non-empty list"):
        parse(VariantParams, {"steps": {"diff_residual": [0]}}, "v")
    with pytest.raises(ConfigError, match="gated.corrector = 'nope' is not a corrector stage"):
        parse(GatedParams, {"corrector": "nope"}, "gated")


def test_variant_parameters_of_models_registered_before_the_registry_still_parse() -> None:
    old = {"corrector_steps": [16], "student_steps": [1], "gated": None, "seed": 0,
           "solver_reference": False, "batch_size": 64}
    params = parse(VariantParams, VariantParams.upgrade(old), "variant_params")
    assert params.steps_of("diff_residual") == (16,)
    assert params.steps_of("consistency_distill") == (1,)
    assert VariantParams.upgrade({"steps": {"diff_residual": [2]}}) == {
        "steps": {"diff_residual": [2]}}
