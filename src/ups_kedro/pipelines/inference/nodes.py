"""Nodes of ``inference``: from an initial condition in a file to a trajectory in PDEBench layout.

Transient mode rolls out the champion from the MLflow Model Registry (``source: champion``) or
named checkpoint files (``source: checkpoints``), with the promoted variant — gated correction
included.  Steady mode maps coefficient fields (and an optional initial guess) to the decoded
steady field with the Stage 4 prior.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ups_kedro.config import parse, to_dict
from ups_kedro.data.initial_condition import read_coefficients, read_initial_condition
from ups_kedro.datasets.checkpoint_dataset import CheckpointDataset
from ups_kedro.errors import InputFileError
from ups_kedro.evaluation.report import steady_figure, trajectory_figure
from ups_kedro.evaluation.steady import predict_steady
from ups_kedro.paths import project_root
from ups_kedro.pipelines.inference.config import InferenceConfig, default_checkpoint_paths
from ups_kedro.serving.pyfunc import SurrogateModel
from ups_kedro.serving.registry import load_registered
from ups_kedro.stages import BASE_STAGES, CORRECTORS

logger = logging.getLogger(__name__)
STAGE = "inference"


def _config(params: dict[str, Any]) -> InferenceConfig:
    return parse(InferenceConfig, params, STAGE)


def _load(path: str | None, optional: bool = False) -> dict | None:
    if path is None:
        return None
    return CheckpointDataset(str(project_root() / path), optional=optional).load()


def _surrogate(cfg: InferenceConfig) -> tuple[SurrogateModel, str, dict]:
    """The model to roll out, a description of where it came from, its autoencoder checkpoint."""
    if cfg.source == "champion":
        champion = load_registered(cfg.model_name, cfg.alias)
        if champion is None:
            raise ValueError(f"inference: no {cfg.model_name}@{cfg.alias} in the MLflow Model "
                             "Registry; run `kedro run --pipeline promotion` first, or set "
                             "inference.source: checkpoints")
        model = SurrogateModel(cfg.variant or champion.variant, champion.variant_params)
        model.setup(champion.checkpoints)
        return (model, f"{cfg.model_name} v{champion.version} (@{cfg.alias})",
                champion.checkpoints["autoencoder"])
    paths = checkpoint_paths(cfg)
    checkpoints = {stage: _load(path, optional=stage not in BASE_STAGES)
                   for stage, path in paths.items()}
    model = SurrogateModel(cfg.variant or "operator", to_dict(cfg.variants))
    model.setup(checkpoints)
    return (model, "checkpoints " + ", ".join(f"{k}={v}" for k, v in paths.items()),
            checkpoints["autoencoder"])


def checkpoint_paths(cfg: InferenceConfig) -> dict[str, str | None]:
    """``{stage: path}`` of the transient surrogate for ``source: checkpoints``.

    A corrector without its own ``inference.checkpoints`` key reads the path its catalog
    writes (:attr:`ups_kedro.stages.CorrectorStage.default_path`).
    """
    paths = {**default_checkpoint_paths(), **cfg.checkpoints}
    return {stage: paths[stage] for stage in (*BASE_STAGES, *(c.name for c in CORRECTORS))}


def _steady_path(cfg: InferenceConfig, stage: str) -> str:
    """The Stage 4 checkpoint ``stage`` (its default path unless ``inference.checkpoints`` names one)."""
    return cfg.checkpoints.get(stage) or default_checkpoint_paths()[stage]


def _check_grid(u0: np.ndarray, autoencoder: dict, path: Any) -> None:
    """``u0 [B, *space, C]`` is on the grid the model was trained on (else say so in user terms)."""
    encoder = (autoencoder.get("config") or {}).get("encoder") or {}
    grid, channels = encoder.get("grid_shape"), encoder.get("in_channels")
    if grid is None or channels is None:
        return
    if tuple(u0.shape[1:-1]) != tuple(grid) or u0.shape[-1] != channels:
        raise InputFileError(
            f"inference.initial_condition.path: {path} gives fields on a grid of "
            f"{tuple(u0.shape[1:-1])} points with {u0.shape[-1]} channel(s), but the model was "
            f"trained on {tuple(grid)} points with {channels} channel(s): give data on that grid "
            "(for a PDEBench file set inference.initial_condition.space_stride to the training "
            "data's data_processing.downsample_space)")


def _grid(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


def run_inference(params: dict[str, Any]) -> tuple[dict, Figure]:
    """The predicted trajectory (PDEBench layout) and a figure of it."""
    cfg = _config(params)
    ic = cfg.initial_condition
    path = project_root() / ic.path
    samples = None if ic.samples is None else list(ic.samples)
    if cfg.mode == "steady":
        return _steady(cfg, path, samples)
    model, origin, autoencoder = _surrogate(cfg)
    u0 = read_initial_condition(path, samples, ic.frame, ic.space_stride)
    _check_grid(u0, autoencoder, path)
    pred = model.predict(None, u0, {"n_steps": cfg.n_steps})  # [B, n, *space, C]
    tensor = np.concatenate([u0[:, None], pred], axis=1)
    dt = model.surrogate.dt
    t = dt * np.arange(tensor.shape[1] + 1)  # PDEBench: one trailing time
    x = _grid(tensor.shape[2])
    logger.info("inference: %d trajectories × %d steps with %s (variant %s)", len(u0),
                cfg.n_steps, origin, model.variant)
    out = {"layout": "tensor", "tensor": tensor[..., 0], "x": x, "t": t,
           "attrs": {"model": origin, "variant": model.variant, "source_file": str(path),
                     "start_frame": ic.frame}}
    if tensor.ndim == 5:  # 2D fields [B, T, X, Y, C]: the PDEBench layout stores y as well
        out["y"] = _grid(tensor.shape[3])
    return out, trajectory_figure(tensor, x, t[:-1], title=f"{model.variant} — {origin}")


def _steady(cfg: InferenceConfig, path, samples) -> tuple[dict, Figure]:
    nu = read_coefficients(path, samples, cfg.initial_condition.space_stride)
    guess = None
    if cfg.initial_condition.initial_guess is not None:
        guess = read_initial_condition(project_root() / cfg.initial_condition.initial_guess,
                                       samples, 0, cfg.initial_condition.space_stride,
                                       space_dims=2)
    u = predict_steady(_load(_steady_path(cfg, "steady_prior")),
                       _load(_steady_path(cfg, "steady_autoencoder")), nu, initial_guess=guess,
                       steps=cfg.steady_steps)  # [B, X, Y, C]
    x, y = _grid(u.shape[1]), _grid(u.shape[2])
    logger.info("inference (steady): %d fields from %s", len(nu), path)
    out = {"layout": "darcy", "tensor": u[:, None, ..., 0], "nu": nu, "x": x, "y": y,
           "attrs": {"model": _steady_path(cfg, "steady_prior"), "source_file": str(path)}}
    return out, steady_figure(nu, u[..., 0])
