"""The blessing gate: is the candidate good enough to become the champion? (TFX Evaluator style: an
absolute lower bound, plus a bound on the regression against the current champion when there is one.)"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from simrec.infra.errors import InputError
from simrec.records import GATE_MODES, GateChampion, GateDecision

GATE_METRIC = "recall_at_1"  # GateChampion's score field has the same name


@dataclass(frozen=True)
class GateSettings:
    mode: str = "enabled"  # enabled: promote when blessed; dry-run: decide, never promote; disabled: no gate
    min_recall_at_1: float = 0.0
    max_regression: float = 0.0  # how far below the champion's recall@1 the candidate may be

    def __post_init__(self) -> None:
        if self.mode not in GATE_MODES:
            raise InputError(f"gate mode must be one of {', '.join(GATE_MODES)}, got {self.mode!r}")
        if not 0.0 <= self.min_recall_at_1 <= 1.0:
            raise InputError(f"gate minimum recall@1 must be within 0..1, got {self.min_recall_at_1}")
        if not 0.0 <= self.max_regression <= 1.0:
            raise InputError(f"gate maximum regression must be within 0..1, got {self.max_regression}")


def decide(settings: GateSettings, candidate: float, champion: GateChampion | None) -> GateDecision:
    """The gate's record: mode, blessed, reasons, thresholds and the champion compared against."""
    if settings.mode == "disabled":
        blessed, reasons = True, ["gate disabled: every model is promoted"]
    else:
        reasons = []
        above_minimum = candidate >= settings.min_recall_at_1
        reasons.append(
            f"{GATE_METRIC} {candidate:.4f} {'>=' if above_minimum else '<'} minimum "
            f"{settings.min_recall_at_1:.4f}"
        )
        not_worse = True
        if champion is None:
            reasons.append("no champion yet: the minimum alone decides")
        else:
            score = getattr(champion, GATE_METRIC)
            not_worse = candidate >= score - settings.max_regression
            reasons.append(
                f"{GATE_METRIC} {candidate:.4f} {'>=' if not_worse else '<'} champion v{champion.version} "
                f"{score:.4f} - allowed regression {settings.max_regression:.4f}"
            )
        blessed = above_minimum and not_worse
    return GateDecision(**asdict(settings), blessed=blessed, reasons=reasons, champion=champion)
