"""Rendering of the dry run's rules-vs-optimised comparison as text."""


def held_out_lines(comparison) -> list[str]:
    """Return the held-out comparison: incremental margin per CNY of both choices on outcomes no chooser saw."""
    held = comparison.held_out
    if held is None:
        return [f"Held out: not compared ({comparison.held_out_missing})"]

    def interval(lower, upper) -> str:
        return "[no interval]" if lower is None else f"[{lower:.3f}, {upper:.3f}]"

    lines = [
        f"Held out ({comparison.held_out_folds}-fold cross-fitting: past experiments' users, each fold chosen by "
        f"models fitted without it and valued on its randomised outcomes; {held.confidence:.0%} intervals):"
    ]
    for name, value in (("rules", held.first), ("optimised", held.second)):
        per_cny = "-" if value.margin_per_cny is None else f"{value.margin_per_cny:.3f}"
        lines.append(
            f"{name:<12} incremental margin per CNY {per_cny} {interval(value.lower, value.upper)} "
            f"on {value.rows} users costing {value.cost:.2f} CNY"
        )
    if held.difference_per_cny is not None:
        lines.append(
            f"optimised - rules: {held.difference_per_cny:+.3f} per CNY "
            f"{interval(held.difference_lower, held.difference_upper)}"
        )
    if comparison.held_out_missing:
        lines.append(f"note: {comparison.held_out_missing}")
    return lines
