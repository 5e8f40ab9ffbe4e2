#!/usr/bin/env python
"""Django's command-line utility for crossmkt."""

import os
import sys


def main() -> None:
    """Run a management command, with local settings unless told otherwise."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crossmkt_site.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
