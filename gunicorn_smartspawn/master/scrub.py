"""Overwrite strings in place before they are freed, so that their bytes do not outlive them.

A fresh child of the master drops every other app's configuration; the
memory of a freed Python string keeps its bytes until it is reused, and app
code can read its own process's memory. So, before the drop, the child
overwrites the strings that only the dropped containers hold
(:func:`wipe_exclusive_strings`).

Conservative by construction: a string is overwritten only if it is an
exact ``str``, ASCII, compact (its characters right after its header, where
every character is checked before anything is written), and if its
reference count is exactly what the given containers and this function
account for. A string anything else holds (a module-level name of the
configuration file, another app's entry, an immortal or interned-immortal
string) is left alone.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable
from typing import Any


def wipe_exclusive_strings(containers: Iterable[Any]) -> int:
    """Zero the characters of every string that only ``containers`` (dicts: their values;
    lists and tuples: their items) hold; how many strings were wiped."""
    counts, strings = _candidates(containers)
    own = _own_references()
    wiped = 0
    for key in list(strings):
        if sys.getrefcount(strings[key]) == counts[key] + own and _wipe_ascii(strings[key]):
            wiped += 1
    strings.clear()
    return wiped


def _candidates(containers: Iterable[Any]) -> tuple[dict[int, int], dict[int, str]]:
    """(id -> references from the containers, id -> the string) for the non-empty ASCII strings."""
    seen: dict[int, Any] = {}
    for container in containers:
        if isinstance(container, (dict, list, tuple)):
            seen.setdefault(id(container), container)
    counts: dict[int, int] = {}
    strings: dict[int, str] = {}
    for container in seen.values():
        for item in container.values() if isinstance(container, dict) else container:
            if type(item) is str and item and item.isascii():
                counts[id(item)] = counts.get(id(item), 0) + 1
                strings[id(item)] = item
    return counts, strings


def _own_references() -> int:
    """The references counting itself adds (the table's, the call's): measured on a string
    that one container holds, as the candidates are measured, so that no interpreter's
    way of counting is assumed."""
    holder = ["".join(("smartspawn", "-", "probe"))]
    table = {0: holder[0]}
    return sys.getrefcount(table[0]) - 1


def _wipe_ascii(text: str) -> bool:
    """Zero ``text``'s characters where CPython keeps them; False (nothing written) unless
    every character and the terminating NUL are found exactly there."""
    length = len(text)
    offset = sys.getsizeof(text) - length - 1  # a compact ASCII string: header, characters, NUL
    if offset <= 0:
        return False
    chars = (ctypes.c_char * (length + 1)).from_address(id(text) + offset)
    # one character at a time: a copy of the whole string would leave one more in memory
    if chars[length] != b"\0" or any(chars[i] != text[i].encode() for i in range(length)):
        return False
    ctypes.memset(ctypes.addressof(chars), 0, length)
    return True
