"""Return on what a campaign spent: incremental margin of a treated arm over the control, and ROI on spend.

Pure statistics, no Django. The margin of a purchase is what the seller keeps of it (price
less the partner's share); per user it is the sum over the user's converting purchases,
zeros included. Incremental margin = treated total - control total x treated users / control
users, with bounds that scale Welch's interval of the per-user difference to the treated arm
(as ``effects.campaign_return`` does for revenue). Spend is the money the arm's offers really
cost (observed, not estimated), so net margin = incremental margin - spent and ROI = net margin
/ spent carry the same interval, shifted and scaled. With nothing spent ROI is undefined.

A margin the treated arm has for certain and the control cannot have (``observed_margin``: the
campaign's own coupon discounts, which count in the margin gross of them and again, as observed
money, in spent) is added to the incremental margin as observed, like spent, outside Welch's
interval: estimating it would count the sampling spread of money the ROI subtracts again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from .effects import DEFAULT_CONFIDENCE, NotEnoughData, RevenueValue, revenue_uplift

CENT = Decimal("0.01")
RATIO_STEP = Decimal("0.0001")
_PRECISION = 60


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def _money(value: Decimal | int | str) -> Decimal:
    if isinstance(value, float):
        raise TypeError("spend must not be a float; pass a Decimal, int or string")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"spend must be a non-negative amount, not {value!r}")
    return amount


@dataclass(frozen=True)
class SpendReturn:
    """Hold one treated arm's incremental margin and its return on what the arm's offers cost."""

    users_treated: int
    users_control: int
    confidence: float
    spent: Decimal
    margin_per_user_treated: Decimal
    margin_per_user_control: Decimal
    incremental_margin: Decimal
    incremental_margin_lower: Decimal
    incremental_margin_upper: Decimal
    net_margin: Decimal
    net_margin_lower: Decimal
    net_margin_upper: Decimal
    roi: Decimal | None
    roi_lower: Decimal | None
    roi_upper: Decimal | None
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-safe values: Decimal as a string, None kept."""
        return {name: str(value) if isinstance(value, Decimal) else value for name, value in self.__dict__.items()}


def spend_return(
    spent: Decimal | int | str,
    margin_treated: Sequence[RevenueValue] | npt.NDArray[Any],
    margin_control: Sequence[RevenueValue] | npt.NDArray[Any],
    confidence: float = DEFAULT_CONFIDENCE,
    observed_margin: Decimal | int | str = 0,
) -> SpendReturn:
    """Set a treated arm's incremental margin against what it spent; raise NotEnoughData for arms under two users.

    ``margin_treated`` and ``margin_control`` are per-user margins without ``observed_margin``,
    the treated arm's total margin known exactly (its coupons' discounts), which is added as is.
    """
    spend = _money(spent)
    observed = _money(observed_margin)
    # The bootstrap is not needed here; one resample keeps revenue_uplift's Welch parts and checks.
    uplift = revenue_uplift(margin_treated, margin_control, confidence, resamples=1)
    treated, control = uplift.users_treated, uplift.users_control
    half_width = float(stats.t.ppf(0.5 + uplift.confidence / 2.0, uplift.degrees_of_freedom)) * uplift.standard_error
    if not np.isfinite(half_width):
        raise NotEnoughData("the margin per user has no finite spread in one of the arms")
    with localcontext(prec=_PRECISION):
        per_user = uplift.total_treated / treated - uplift.total_control / control
        half = Decimal(repr(half_width))
        incremental = per_user * treated + observed
        lower, upper = (per_user - half) * treated + observed, (per_user + half) * treated + observed
        if spend > 0:
            roi: Decimal | None = ((incremental - spend) / spend).quantize(RATIO_STEP)
            roi_lower: Decimal | None = ((lower - spend) / spend).quantize(RATIO_STEP)
            roi_upper: Decimal | None = ((upper - spend) / spend).quantize(RATIO_STEP)
            note = None
        else:
            roi = roi_lower = roi_upper = None
            note = "nothing was spent, so ROI is undefined; the incremental margin is reported alone"
    return SpendReturn(
        users_treated=treated,
        users_control=control,
        confidence=uplift.confidence,
        spent=_cents(spend),
        margin_per_user_treated=_cents(uplift.mean_treated + observed / treated),
        margin_per_user_control=uplift.mean_control,
        incremental_margin=_cents(incremental),
        incremental_margin_lower=_cents(lower),
        incremental_margin_upper=_cents(upper),
        net_margin=_cents(incremental - spend),
        net_margin_lower=_cents(lower - spend),
        net_margin_upper=_cents(upper - spend),
        roi=roi,
        roi_lower=roi_lower,
        roi_upper=roi_upper,
        note=note,
    )
