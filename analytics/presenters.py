"""Render what the retraining quality gate decided on a model run, in the reader's language."""

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext as _

from .services.quality_gate import FIRST, FORCED, KEPT, NOT_COMPARED, NOT_REQUESTED, PASSED


def _metric_names() -> dict[str, str]:
    return {
        "auc": _("held-out AUC"),
        "concordance": _("concordance"),
        "holdout_purchases_mae": _("holdout purchases MAE"),
        "silhouette": _("silhouette"),
        "hit_rate_at_10": _("hit rate at 10"),
        "qini_coefficient": _("Qini coefficient"),
    }


def _figure(figures: Mapping[str, Any]) -> str:
    se = figures.get("se")
    return f"{figures['value']:.4f}" if se is None else f"{figures['value']:.4f} ± {se:.4f}"


def quality_gate_text(gate: Mapping[str, Any]) -> str:
    """Return one sentence saying what the gate decided on a run and why ("" for runs stored before the gate)."""
    decision = gate.get("decision")
    if not decision:
        return ""
    metric = _metric_names().get(gate.get("metric") or "", gate.get("metric") or "")
    values: dict[str, Any] = {"metric": metric, "version": gate.get("active_version")}
    if "active" in gate:
        values |= {
            "candidate": _figure(gate["candidate"]),
            "active": _figure(gate["active"]),
            "worse_by": f"{abs(gate['worse_by']):.4f}",
            "tolerance": "∞" if gate.get("tolerance") is None else f"{gate['tolerance']:.4f}",
        }
    comparison = ""
    if "active" in gate:
        if gate["worse_by"] > 0:
            comparison = (
                _("%(metric)s %(candidate)s against %(active)s of v%(version)s: worse by %(worse_by)s, ") % values
            )
        else:
            comparison = _("%(metric)s %(candidate)s against %(active)s of v%(version)s: not worse, ") % values
        comparison += _("standard error of the difference %(tolerance)s.") % values
    if decision == FIRST:
        return _("Activated: the first run of this model.")
    if decision == PASSED:
        return _("Activated: %(comparison)s") % {"comparison": comparison}
    if decision == KEPT:
        return _("Kept, not activated: %(comparison)s") % {"comparison": comparison}
    if decision == FORCED:
        return _("Activated by an operator over the quality gate: %(comparison)s") % {"comparison": comparison}
    if decision == NOT_COMPARED:
        if gate.get("reason") == "candidate_has_no_metric":
            return _("Activated without comparison: this run has no held-out metric.")
        return _("Activated without comparison: the active run v%(version)s has no held-out metric.") % values
    if decision == NOT_REQUESTED:
        return _("Stored without activation, as asked. %(comparison)s") % {"comparison": comparison}
    return str(decision)
