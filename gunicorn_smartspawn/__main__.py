"""``python -m gunicorn_smartspawn``: the ``smartspawn`` tool, without its console script."""

from gunicorn_smartspawn.control.cli import main

raise SystemExit(main())
