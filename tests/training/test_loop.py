"""Behaviour of fit(): learning, accumulation, clipping, selection, stopping, AMP, compile."""

from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path

import pytest
import torch
from training_support import (
    FailAt,
    NoisyTask,
    RegressionData,
    RegressionTask,
    make_model,
    resume_cfg,
    resume_data,
    strip_timing,
)

from ups_kedro.training.config import OptimizerConfig, SchedulerConfig, TrainConfig
from ups_kedro.training.launcher import fit
from ups_kedro.training.task import NonFiniteLossError
from ups_kedro.training.losses import mse

SGD = OptimizerConfig(name="sgd", lr=0.05, momentum=0.0)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 8, "optimizer": SGD, "progress": False,
                          "seed": 0, **kw})


def test_loss_decreases_and_metrics_are_complete() -> None:
    seen: list[tuple[int, dict]] = []
    result = fit(
        make_model(),
        RegressionTask(),
        RegressionData(64),
        RegressionData(16, seed=5),
        _cfg(epochs=6, optimizer=OptimizerConfig(lr=1e-2)),
        stage="unit",
        on_epoch_end=lambda e, m: seen.append((e, m)),
    )
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert set(seen[0][1]) == {
        "loss", "loss_mse", "loss_mae", "val_loss", "val_mse", "val_mae", "lr", "grad_norm",
        "grad_norm_max", "epochs_since_improve", "epoch_time_sec", "samples_per_sec",
        "grad_vanishing", "grad_exploding",
    }
    assert result.stopped_reason == "completed" and result.epochs_run == 6
    best = min(result.history, key=lambda h: h["val_loss"])
    assert result.best_epoch == best["epoch"] and result.best_val_loss == best["val_loss"]
    assert result.ema_state is None


@pytest.mark.parametrize("n", [64, 40])  # 40: a trailing short accumulation group each epoch
def test_accumulation_equals_larger_batch(n: int) -> None:
    data = RegressionData(n)
    # Shuffling draws one randperm(n) per epoch from the same seeded generator whatever the
    # batch size, so batch 16 = two consecutive batches of 8.
    task = RegressionTask()
    small = fit(make_model(), task, data, None, _cfg(batch_size=8, accum_steps=2), stage="a")
    large = fit(make_model(), task, data, None, _cfg(batch_size=16), stage="b")
    for key, value in small.model_state.items():
        assert torch.allclose(value, large.model_state[key], atol=1e-6), key
    for hs, hl in zip(small.history, large.history):
        assert hs["grad_norm"] == pytest.approx(hl["grad_norm"], rel=1e-5)
        assert hs["loss"] == pytest.approx(hl["loss"], rel=1e-5)


def test_grad_clip_reports_pre_clip_norm() -> None:
    data = RegressionData(16)
    model = make_model()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    # Expected full-batch gradient norm at the initial weights.
    ref = make_model()
    mse(ref(data.x), data.y).backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in ref.parameters()]).item()
    clip = 1e-3
    assert norm > 100 * clip
    cfg = _cfg(epochs=1, batch_size=16, grad_clip=clip)
    result = fit(model, RegressionTask(), data, None, cfg, stage="c")
    assert result.history[0]["grad_norm"] == pytest.approx(norm, rel=1e-5)
    assert result.history[0]["grad_norm_max"] == pytest.approx(norm, rel=1e-5)
    # The applied step was clipped: SGD moved the weights by lr·clip in global norm.
    step = torch.cat([(w0[k] - v).flatten() for k, v in result.model_state.items()]).norm()
    assert step.item() == pytest.approx(SGD.lr * clip, rel=1e-3)


class ConstantValTask(RegressionTask):
    def validation_loss(self, model, batch):
        return torch.tensor(1.0), {}


def test_plateau_scheduler_uses_validation_loss() -> None:
    plateau = SchedulerConfig(name="reducelronplateau", factor=0.5, patience=0)
    cfg = _cfg(epochs=4, scheduler=plateau)
    result = fit(
        make_model(), ConstantValTask(), RegressionData(32), RegressionData(8), cfg, stage="p"
    )
    # Training loss falls every epoch, but the validation loss is flat: the lr is halved.
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.05, 0.025, 0.0125])


def test_patience_and_target_loss_stop() -> None:
    result = fit(
        make_model(), ConstantValTask(), RegressionData(32), RegressionData(8),
        _cfg(epochs=10, patience=2), stage="p",
    )
    assert (result.stopped_reason, result.epochs_run, result.best_epoch) == ("patience", 3, 1)
    assert [h["epochs_since_improve"] for h in result.history] == [0, 1, 2]
    result = fit(
        make_model(), RegressionTask(), RegressionData(32), RegressionData(8),
        _cfg(epochs=10, target_loss=1e9), stage="t",
    )
    assert (result.stopped_reason, result.epochs_run) == ("target_loss", 1)


def test_selects_on_training_loss_without_validation() -> None:
    result = fit(make_model(), RegressionTask(), RegressionData(32), None, _cfg(), stage="n")
    assert "val_loss" not in result.history[0]
    best = min(result.history, key=lambda h: h["loss"])
    assert result.best_epoch == best["epoch"] and result.best_val_loss == best["loss"]


def test_nan_loss_raises_and_keeps_last_good_state(tmp_path: Path) -> None:
    train, val = resume_data()
    with pytest.raises(NonFiniteLossError) as info:
        fit(
            make_model(), FailAt(3, 2, action="nan"), train, val, resume_cfg(),
            stage="nanny", state_dir=tmp_path,
        )
    message = str(info.value)
    # 5 batches, accum 2 → 3 optimizer steps per epoch; batch 2 of epoch 3 is in step 7.
    assert "'nanny'" in message and "epoch 3" in message and "step 7" in message
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == 2 and not saved["finished"]


def test_deterministic_with_same_seed() -> None:
    train, val = resume_data()
    a = fit(make_model(), NoisyTask(), train, val, resume_cfg(), stage="d")
    b = fit(make_model(), NoisyTask(), train, val, resume_cfg(), stage="d")
    for k in a.model_state:
        assert torch.equal(a.model_state[k], b.model_state[k])
        assert torch.equal(a.ema_state[k], b.ema_state[k])
    assert strip_timing(a.history) == strip_timing(b.history)
    c = fit(make_model(), NoisyTask(), train, val, resume_cfg(seed=8), stage="d")
    assert not torch.equal(a.model_state["0.weight"], c.model_state["0.weight"])


def test_finished_state_and_periodic_checkpoints(tmp_path: Path) -> None:
    train, val = resume_data()
    task = RegressionTask()
    first = fit(make_model(), task, train, val, resume_cfg(), stage="f", state_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".lock", "epoch_0002.pt", "epoch_0004.pt", "last.pt"]  # lock: emptied
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["finished"] and last["stopped_reason"] == "completed" and last["epoch"] == 5
    periodic = torch.load(tmp_path / "epoch_0002.pt", weights_only=True)
    assert periodic["epoch"] == 2 and periodic["ema"] is not None
    # A finished state is not resumed: the next run trains from scratch, identically.
    again = fit(make_model(), task, train, val, resume_cfg(), stage="f", state_dir=tmp_path)
    assert again.resumed_from == 0
    assert strip_timing(again.history) == strip_timing(first.history)


def test_mismatched_fingerprint_moves_state_aside(tmp_path: Path) -> None:
    train, val = resume_data()
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), FailAt(2, 1), train, val, resume_cfg(), stage="m", state_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="belongs to another run"):
        result = fit(
            make_model(), RegressionTask(), train, val, resume_cfg(), stage="m",
            state_dir=tmp_path, fingerprint="other-data",
        )
    assert result.resumed_from == 0 and result.epochs_run == 5
    assert len(list(tmp_path.glob("last.stale-*.pt"))) == 1


class DtypeTask(RegressionTask):
    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def training_loss(self, model, batch, epoch):
        self.dtypes.add(model(batch["x"]).dtype)
        return super().training_loss(model, batch, epoch)


def test_amp_bf16_on_cpu() -> None:
    task = DtypeTask()
    cfg = _cfg(amp=True)
    result = fit(make_model(), task, RegressionData(32), RegressionData(8), cfg, stage="amp")
    assert task.dtypes == {torch.bfloat16}
    assert all(math.isfinite(h["loss"]) for h in result.history)
    assert all(v.dtype == torch.float32 for v in result.model_state.values())


def _assert_no_compile_prefix(result, state_dir: Path) -> None:
    assert not any("_orig_mod" in k for k in result.model_state)
    assert not any("_orig_mod" in k for k in result.ema_state)
    saved = torch.load(state_dir / "last.pt", weights_only=True)
    for part in (saved["model"], saved["best_model"], saved["ema"]["module"]):
        assert not any("_orig_mod" in k for k in part)
    assert not any("_orig_mod" in k for k in torch.load(state_dir / "epoch_0002.pt")["model"])


def test_compile_path_saves_plain_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dynamo's wrapper (the source of "_orig_mod.") without the slow inductor code generation.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    train, val = resume_data()
    cfg = resume_cfg(epochs=2, compile=True)
    result = fit(make_model(), RegressionTask(), train, val, cfg, stage="comp", state_dir=tmp_path)
    _assert_no_compile_prefix(result, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("UPS_RUN_SLOW") != "1", reason="inductor compile ≈ 20-60 s on CPU"
)
def test_compile_with_inductor(tmp_path: Path) -> None:
    train, val = resume_data()
    started = time.perf_counter()
    cfg = resume_cfg(epochs=2, compile=True)
    result = fit(make_model(), RegressionTask(), train, val, cfg, stage="comp", state_dir=tmp_path)
    _assert_no_compile_prefix(result, tmp_path)
    reference = fit(make_model(), RegressionTask(), train, val, resume_cfg(epochs=2), stage="comp")
    for k, v in reference.model_state.items():
        assert torch.allclose(v, result.model_state[k], atol=1e-4)
    print(f"inductor path: {time.perf_counter() - started:.1f} s")


def test_frozen_parameters_stay_frozen() -> None:
    model = make_model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    result = fit(model, RegressionTask(), RegressionData(32), None, _cfg(), stage="fz")
    assert torch.equal(result.model_state["0.weight"], frozen)
    assert not torch.equal(result.model_state["2.weight"], make_model()[2].weight)


def test_zero_epochs_is_a_no_op() -> None:
    model = make_model()
    result = fit(model, RegressionTask(), RegressionData(8), None, _cfg(epochs=0), stage="off")
    assert result.epochs_run == 0 and result.history == []
    assert torch.equal(result.model_state["0.weight"], model[0].weight)
