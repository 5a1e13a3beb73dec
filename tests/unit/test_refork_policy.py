"""refork.due: which worker is promoted, and when (pure)."""

from gunicorn_smartspawn.master.refork import Served, due


def test_nothing_is_due_below_the_next_count() -> None:
    assert due([100, 500], 0, [Served(10, 99), Served(11, 50)]) is None


def test_the_worker_that_served_most_is_promoted_once_it_reaches_the_count() -> None:
    assert due([100, 500], 0, [Served(10, 99), Served(11, 130), Served(12, 101)]) == Served(11, 130)


def test_each_refork_waits_for_its_own_count() -> None:
    served = [Served(10, 300)]
    assert due([100, 500], 1, served) is None
    assert due([100, 500], 1, [Served(10, 500)]) == Served(10, 500)


def test_no_refork_past_the_last_count_or_without_counts() -> None:
    assert due([100], 1, [Served(10, 10**6)]) is None
    assert due([], 0, [Served(10, 10**6)]) is None
    assert due([1], 0, []) is None


def test_a_tie_goes_to_the_older_worker() -> None:
    assert due([5], 0, [Served(12, 7), Served(10, 7)]) == Served(10, 7)
