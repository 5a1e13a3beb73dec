"""The refork setting: promote a worker that has served traffic to be its app's next preloader.

Registered with gunicorn like the other settings (imported by :mod:`.settings`).
See docs/pool.md ("Refork").
"""

from __future__ import annotations

from gunicorn.config import Setting

from gunicorn_smartspawn.config import validators
from gunicorn_smartspawn.hook.state import Explicit

SECTION = "Smart Spawning"  # (hook/settings.py's; not imported from there: it imports this module)


class ReforkAfter(Explicit, Setting):  # type: ignore[misc]
    name = "refork_after"
    section = SECTION
    cli = ["--refork-after"]
    meta = "COUNTS"
    validator = validators.deferred(validators.for_setting("refork_after"))
    default: list[int] = []
    desc = """\
        Promote a worker that served this many requests to be the next preloader.

        A comma-separated list of increasing request counts (``1000,5000``;
        a list in gunicorn.conf.py). Smart spawning; sync workers, and
        gthread on gunicorn 27. When a worker of the current generation has served the
        first count, it finishes its request, stops accepting, and becomes
        its app's preloader: the caches, lazily built objects and imports
        that real traffic made in it are then shared copy-on-write by every
        worker forked after it, and the workers forked from the old
        preloader are replaced one for one, as after a HUP, with no request
        lost. The next count applies to the workers of the new preloader,
        and so on; a HUP, or a preloader restarted after its idle timeout,
        starts the counts again. Empty (the default): never. As pitchfork's
        ``refork_after``. See docs/pool.md.
        """
