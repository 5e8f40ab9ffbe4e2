"""The closing summary every import command prints."""


def report_import(command, result, *, noun: str, show_rejected: int) -> None:
    """Print imported / duplicates / rejected, and the rejected rows by line, column and reason."""
    style = command.style.WARNING if result.rejected else command.style.SUCCESS
    command.stdout.write(style(
        f"{result.imported} {noun} imported, {result.duplicates} duplicates skipped, {len(result.rejected)} rejected"
        + (f"; {result.users_created} new users" if result.users_created else "")
    ))
    for rejection in result.rejected[:show_rejected]:
        command.stdout.write(f"  rejected {rejection.describe('line')}")
    if len(result.rejected) > show_rejected:
        command.stdout.write(f"  … and {len(result.rejected) - show_rejected} more (use --show-rejected N to list them)")
