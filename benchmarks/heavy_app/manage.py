#!/usr/bin/env python
"""Django's command-line utility for heavy_app.

Run from the repository root: ``python -m benchmarks.heavy_app.manage check``.
"""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.heavy_app.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
