"""What the ``.pth`` startup hook reaches: the settings, the arbiter selector, and their state.

:mod:`.state` is a leaf any layer may read; :mod:`.plugin` is the top of the
import graph (it builds the master); :mod:`.settings` registers the
plugin's ``Setting`` subclasses with gunicorn.
"""
