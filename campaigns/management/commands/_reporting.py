"""The closing summary every import command prints."""

from django.utils import translation

from analytics.presenters import quality_gate_text


def report_import(command, result, *, noun: str, show_rejected: int) -> None:
    """Print imported / duplicates / rejected, and the rejected rows by line, column and reason."""
    style = command.style.WARNING if result.rejected else command.style.SUCCESS
    command.stdout.write(
        style(
            f"{result.imported} {noun} imported, {result.duplicates} duplicates skipped, "
            f"{len(result.rejected)} rejected" + (f"; {result.users_created} new users" if result.users_created else "")
        )
    )
    for rejection in result.rejected[:show_rejected]:
        command.stdout.write(f"  rejected {rejection.describe('line')}")
    if len(result.rejected) > show_rejected:
        command.stdout.write(
            f"  … and {len(result.rejected) - show_rejected} more (use --show-rejected N to list them)"
        )


def report_training(command, run, *, name: str, seconds: float) -> None:
    """Print a trained model's version, training rows and time, then its scalar metrics one per line."""
    command.stdout.write(
        command.style.SUCCESS(
            f"{name} v{run.version}: trained on {run.n_train} rows in {seconds:.1f} s"
            f"{'' if run.is_active else ' (not activated)'}"
        )
    )
    with translation.override("en"):  # as every other line of the commands' output
        gate = quality_gate_text(run.quality_gate)
    if gate:
        line = f"  quality gate: {gate}"
        command.stdout.write(command.style.WARNING(line) if not run.is_active else line)
    for key, value in metrics_headline(run.metrics).items():
        command.stdout.write(f"  {key}: {value}")
    holdout = run.metrics.get("holdout") if isinstance(run.metrics, dict) else None
    if isinstance(holdout, dict) and holdout.get("compared"):
        command.stdout.write(
            f"  holdout: {holdout['first_day']} to {holdout['last_day']} ({holdout['weeks']:.1f} weeks, "
            f"{holdout['n_customers']} customers)"
        )
    elif isinstance(holdout, dict):
        command.stdout.write(f"  holdout: not compared ({holdout.get('reason')})")
    trusted = set(run.metrics.get("trusted_packages", ()))
    for package, interval in (run.metrics.get("qini_intervals") or {}).items():
        verdict = (
            "above zero: the optimiser may spend on it"
            if package in trusted
            else "not above zero: its model is not used, only the rules give it"
        )
        command.stdout.write(
            f"  held-out Qini of {package} ({run.metrics.get('selected_method')}): {interval['coefficient']:.4f}, "
            f"{round(interval['confidence'] * 100, 3):g}% interval [{interval['lower']:.4f}, "
            f"{interval['upper']:.4f}], {verdict}"
        )


def metrics_headline(metrics: dict) -> dict:
    """Pick the scalar metrics worth a line each."""
    return {
        key: (round(value, 4) if isinstance(value, float) else value)
        for key, value in metrics.items()
        if isinstance(value, (int, float, str)) and not isinstance(value, bool)
    }
