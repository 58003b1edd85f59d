"""Promotion gates: is a candidate surrogate better than the champion? (pure, no MLflow).

Gates compare like with like: candidate and champion are scored by the caller on the same
trajectories with the same protocol, so only nRMSE values are compared here.  Thresholds are
relative.  With no champion yet (the first run) the candidate must instead beat persistence and
the operator alone by set margins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Variants that are references, never candidates for promotion.
BASELINES = ("persistence", "solver")


@dataclass(frozen=True)
class FirstRunGate:
    min_gain_vs_persistence: float = 20.0  # persistence nRMSE / candidate nRMSE ≥ this
    min_improvement_vs_operator: float = 0.0  # candidate ≤ (1 − x) · operator-alone nRMSE


@dataclass(frozen=True)
class GateParams:
    min_improvement_vs_champion: float = 0.0  # candidate ≤ (1 − x) · champion nRMSE
    max_nrmse: float | None = None  # an absolute ceiling, when set
    first_run: FirstRunGate = field(default_factory=FirstRunGate)


@dataclass
class GateDecision:
    """The outcome of one gate, with every number it used (logged and written verbatim)."""

    gate: str
    passed: bool
    candidate_variant: str
    candidate_nrmse: float
    rule: str
    reasons: list[str]
    champion_variant: str | None = None
    champion_nrmse: float | None = None
    persistence_nrmse: float | None = None
    operator_nrmse: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def pick_candidate(nrmse: dict[str, float], variant: str = "best") -> str:
    """The variant to promote: ``best`` = lowest nRMSE among the surrogate variants."""
    surrogates = {k: v for k, v in nrmse.items() if k not in BASELINES}
    if variant == "best":
        return min(surrogates, key=surrogates.__getitem__)
    if variant not in surrogates:
        raise ValueError(f"promotion.variant={variant!r} was not evaluated; "
                         f"available: {sorted(surrogates)} (or 'best')")
    return variant


def decide(gate: str, candidate: dict[str, float], variant: str, p: GateParams,
           champion: dict[str, float] | None = None,
           champion_variant: str | None = None) -> GateDecision:
    """Apply the gate to ``{variant: nRMSE}`` of the candidate (and of the champion, if any)."""
    c = candidate[variant]
    reasons: list[str] = []
    out = GateDecision(gate, True, variant, c, "", reasons,
                       persistence_nrmse=candidate.get("persistence"),
                       operator_nrmse=candidate.get("operator"))
    if p.max_nrmse is not None and c > p.max_nrmse:
        reasons.append(f"nRMSE {c:.4g} > max_nrmse {p.max_nrmse:.4g}")
    if champion is None:
        out.rule = "first run: beat persistence and the operator alone"
        f = p.first_run
        gain = candidate["persistence"] / max(c, 1e-30)
        if gain < f.min_gain_vs_persistence:
            reasons.append(f"gain vs persistence {gain:.3g}× < {f.min_gain_vs_persistence:.3g}×")
        bound = (1.0 - f.min_improvement_vs_operator) * candidate["operator"]
        if c > bound:
            reasons.append(f"nRMSE {c:.4g} > (1 − {f.min_improvement_vs_operator}) × operator "
                           f"{candidate['operator']:.4g}")
    else:
        out.rule = "beat the champion on the same trajectories"
        out.champion_variant = champion_variant
        out.champion_nrmse = champion[champion_variant]
        bound = (1.0 - p.min_improvement_vs_champion) * out.champion_nrmse
        if c > bound:
            reasons.append(f"nRMSE {c:.4g} > (1 − {p.min_improvement_vs_champion}) × champion "
                           f"{out.champion_nrmse:.4g}")
    out.passed = not reasons
    return out
