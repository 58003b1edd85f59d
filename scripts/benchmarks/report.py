"""The Markdown table of a benchmark result (``data/08_reporting/benchmark.md``)."""

from __future__ import annotations


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def _load(result: dict) -> str:
    start, end = result["loadavg_start"], result["loadavg_end"]
    return f"{start[0]:.2f} at start, {end[0]:.2f} at end (1-min)"


def _throughput(sec: dict) -> list[tuple[str, str]]:
    rows = []
    for stage, fig in sec["stages"].items():
        if "error" in fig:
            rows.append((f"training throughput: {stage}", f"not measured: {fig['error']}"))
            continue
        if not fig["epochs"]:
            rows.append((f"training throughput: {stage}",
                         f"no training: the stage copied its teacher ({_f(fig['node_sec'])} s)"))
            continue
        rows.append((f"training throughput: {stage}",
                     f"{_f(fig['samples_per_sec'])} samples/s "
                     f"(epoch {fig['epochs']} of {sec['epochs']}, "
                     f"{sec['train_trajectories']} train trajectories)"))
    return rows


def _overhead(sec: dict) -> list[tuple[str, str]]:
    return [("`kedro run` (kedro-mlflow) / direct call, Stage 1 training, "
             f"{sec['epochs']} epoch", f"{sec['ratio']:.2f} ({_f(sec['kedro_run_wall_sec'])} s "
             f"vs {_f(sec['direct_wall_sec'])} s, whole child processes)")]


def _caching(sec: dict) -> list[tuple[str, str]]:
    c, r = sec["epoch_sec_cached"][1:], sec["epoch_sec_recomputed"][1:]
    return [("Stage 3 teacher caching speed-up (epochs 2+)",
             f"{sec['speedup']:.2f}x ({_f(sum(c))} s cached vs {_f(sum(r))} s recomputed)")]


def _rollout(sec: dict) -> list[tuple[str, str]]:
    rows = [("rollout ms/trajectory: built-in solver",
             f"{_f(sec['solver_ms_per_trajectory'])} ms ({sec['trajectories']} test traj.)")]
    for name, fig in sec["variants"].items():
        rows.append((f"rollout ms/trajectory: {name}",
                     f"{_f(fig['ms_per_trajectory'])} ms ({fig['vs_solver']:.2f}x solver)"))
    return rows


def _rss(sec: dict) -> list[tuple[str, str]]:
    sizes = sec["train_trajectories"]
    small, big = list(sizes)
    rows = []
    for stage, fig in sec["stages"].items():
        a, b = fig[small], fig[big]
        rows.append((f"peak RSS {stage}: {small} ({sizes[small]} traj.) / {big} "
                     f"({sizes[big]} traj.)",
                     f"{a['peak_rss_mb']:.0f} / {b['peak_rss_mb']:.0f} MB "
                     f"(anonymous {a['peak_anon_mb']:.0f} / {b['peak_anon_mb']:.0f} MB, "
                     f"mapped files {a['peak_file_mb']:.0f} / {b['peak_file_mb']:.0f} MB)"))
    return rows


def _ddp(sec: dict) -> list[tuple[str, str]]:
    return [("DDP Stage 1 throughput, 2 processes / 1 process",
             f"{sec['speedup']:.2f}x ({_f(sec['samples_per_sec_2proc'])} vs "
             f"{_f(sec['samples_per_sec_1proc'])} samples/s; final loss rel. diff "
             f"{sec['final_loss_rel_diff']:.1e})")]


def _h2h(sec: dict) -> list[tuple[str, str]]:
    rows = []
    for arch, fig in sec["architectures"].items():
        val, test = fig["val"], fig["test"]
        rows.append((f"Stage 1 head-to-head (equal wall-clock of {sec['budget_epochs']} "
                     f"{sec['budget_architecture']} epochs): {arch}",
                     f"val rollout nRMSE {_f(val['nrmse'])}, test {_f(test['nrmse'])} "
                     f"(h1 {_f(test['nrmse_h1'])}, last {_f(test['nrmse_last'])}); "
                     f"{fig['epochs']} epochs, {_f(fig['train_sec'])} s training"))
    rows.append(("Stage 1 head-to-head winner (validation rollout)", sec["winner_by_val_rollout"]))
    return rows


def _rollout_2d(sec: dict) -> list[tuple[str, str]]:
    where = (f"{'×'.join(map(str, sec['grid']))} grid, {sec['horizon_steps']} steps, "
             f"{sec['trajectories']} test traj.")
    rows = [("2D rollout ms/trajectory: built-in vorticity solver",
             f"{_f(sec['solver_ms_per_trajectory'])} ms ({where}; nRMSE "
             f"{_f(sec['solver_nrmse'])})")]
    for name, fig in sec["variants"].items():
        rows.append((f"2D rollout ms/trajectory: {name}",
                     f"{_f(fig['ms_per_trajectory'])} ms ({fig['vs_solver']:.2f}x solver; "
                     f"nRMSE {_f(fig['nrmse'])})"))
    return rows


ROWS = {"throughput": _throughput, "kedro_overhead": _overhead,
        "teacher_caching": _caching, "rollout": _rollout, "peak_rss": _rss, "ddp": _ddp,
        "operator_h2h": _h2h, "rollout_2d": _rollout_2d}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Benchmark ({result['mode']} mode), {result['date']}, {result['wall_sec']:.0f} s",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} "
        f"({m['torch_threads']} threads); load average {_load(result)}.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for key, rows in ROWS.items():
        if key in result["sections"]:
            lines += [f"| {name} | {value} |" for name, value in rows(result["sections"][key])]
    for key, error in result.get("errors", {}).items():
        lines.append(f"| {key} | not measured: {error} |")
    return "\n".join(lines) + "\n"
