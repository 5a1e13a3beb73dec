"""master/children.py: the one registry of the master's children, and gunicorn's WORKERS as a view of it."""

from __future__ import annotations

import pytest

from gunicorn_smartspawn.master.children import Child, Children, PendingSpawn, WorkersView


class FakeWorker:
    """Stands in for gunicorn's worker object: the registry only stores it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"FakeWorker({self.name})"


def worker(pid: int, app: str = "shop", generation: int = 1) -> Child:
    return Child(pid, "worker", app, generation, born=float(pid), worker=FakeWorker(f"w{pid}"))


def preloader(pid: int, app: str = "shop", generation: int = 1) -> Child:
    return Child(pid, "preloader", app, generation, born=float(pid), channel=object())


def record(children: Children, pid: int) -> Child:
    child = children.get(pid)
    assert child is not None, pid
    return child


def claimed(children: Children, app: str, age: int, preloader_pid: int) -> PendingSpawn:
    pending = children.claim(app, age, preloader_pid)
    assert pending is not None, (app, age, preloader_pid)
    return pending


@pytest.fixture
def children() -> Children:
    table = Children()
    for child in (preloader(100), worker(101), worker(102), preloader(200, "blog"), worker(201, "blog")):
        table.add(child)
    return table


# -- records -----------------------------------------------------------------------------------------


def test_add_get_remove(children: Children) -> None:
    assert len(children) == 5
    assert record(children, 101).role == "worker"
    assert children.get(999) is None
    removed = children.remove(101)
    assert removed is not None and removed.pid == 101
    assert children.remove(101) is None
    assert 101 not in children and len(children) == 4


def test_a_pid_is_registered_once(children: Children) -> None:
    with pytest.raises(ValueError, match="pid 100 is already registered as preloader"):
        children.add(worker(100))
    assert record(children, 100).role == "preloader"  # the first record stays


def test_add_returns_the_record() -> None:
    table = Children()
    child = worker(7)
    assert table.add(child) is child


def test_of_role_by_app(children: Children) -> None:
    assert [c.pid for c in children.of_role("worker")] == [101, 102, 201]
    assert [c.pid for c in children.of_role("worker", "blog")] == [201]
    assert [c.pid for c in children.of_role("preloader", "shop")] == [100]
    assert children.of_role("preloader", "nope") == []


def test_preloader_lookup_is_for_preloaders_only(children: Children) -> None:
    assert children.preloader(100) is children.get(100)
    assert children.preloader(101) is None
    assert children.preloader(999) is None


def test_pids_is_a_snapshot(children: Children) -> None:
    pids = children.pids()
    assert pids == {100, 101, 102, 200, 201}
    children.remove(100)
    assert 100 in pids


def test_membership_takes_any_object(children: Children) -> None:
    assert 100 in children and 101 in children
    assert "100" not in children and None not in children


# -- WorkersView: gunicorn's WORKERS ----------------------------------------------------------------------


def test_the_view_is_the_registry_s(children: Children) -> None:
    assert isinstance(children.workers, WorkersView)
    assert children.workers is children.workers


def test_the_view_sees_workers_only(children: Children) -> None:
    view = children.workers
    assert len(view) == 3
    assert sorted(view) == [101, 102, 201]
    assert view[101] is record(children, 101).worker
    assert dict(view.items()) == {pid: record(children, pid).worker for pid in (101, 102, 201)}
    assert list(view.values()) == [record(children, pid).worker for pid in (101, 102, 201)]
    with pytest.raises(KeyError):
        view[100]  # a preloader is not in WORKERS
    with pytest.raises(KeyError):
        view[999]


def test_in(children: Children) -> None:
    view = children.workers
    assert 101 in view
    assert 100 not in view  # a preloader
    assert 999 not in view
    others: list[object] = ["101", None, 101.5]  # gunicorn may ask about anything
    assert not any(key in view for key in others)


def test_get_with_default(children: Children) -> None:
    view = children.workers
    assert view.get(102) is record(children, 102).worker
    assert view.get(100) is None and view.get(100, "x") == "x"


def test_the_view_follows_the_registry(children: Children) -> None:
    view = children.workers
    children.add(worker(103))
    assert 103 in view and len(view) == 4
    children.remove(101)
    assert 101 not in view and len(view) == 3


def test_pop_removes_the_record(children: Children) -> None:
    # gunicorn's kill_worker on ESRCH: worker = self.WORKERS.pop(pid)
    expected = record(children, 101).worker
    assert children.workers.pop(101) is expected
    assert 101 not in children and 101 not in children.workers


def test_pop_of_a_preloader_or_a_stranger(children: Children) -> None:
    # gunicorn's reap_workers: worker = self.WORKERS.pop(wpid, None) for any reaped pid
    assert children.workers.pop(100, None) is None
    assert children.workers.pop(999, None) is None
    assert children.preloader(100) is not None  # never dropped through the view
    with pytest.raises(KeyError):
        children.workers.pop(100)
    assert 100 in children


def test_del(children: Children) -> None:
    del children.workers[102]
    assert 102 not in children
    with pytest.raises(KeyError):
        del children.workers[102]
    with pytest.raises(KeyError):
        del children.workers[200]  # a preloader
    assert children.preloader(200) is not None


def test_workers_are_not_registered_through_the_view(children: Children) -> None:
    with pytest.raises(TypeError, match=r"registered through Children\.add"):
        children.workers[300] = FakeWorker("w300")
    assert 300 not in children
    with pytest.raises(TypeError):
        children.workers.setdefault(301, FakeWorker("w301"))
    with pytest.raises(TypeError):
        children.workers.update({302: FakeWorker("w302")})


def test_iteration_survives_removal(children: Children) -> None:
    # gunicorn iterates WORKERS while its loop body kills and drops workers
    seen = []
    for pid in children.workers:
        seen.append(pid)
        del children.workers[pid]
    assert seen == [101, 102, 201]
    assert len(children.workers) == 0
    assert [c.pid for c in children.of_role("preloader")] == [100, 200]


def test_clear_drops_workers_and_keeps_preloaders(children: Children) -> None:
    children.workers.clear()
    assert len(children.workers) == 0 and children.pids() == {100, 200}


def test_a_view_of_an_empty_registry() -> None:
    view = Children().workers
    assert len(view) == 0 and list(view) == [] and not view


# -- spawn requests in flight: keyed by (app, age), claimed by the preloader asked ----------------------------


def test_expect_then_claim() -> None:
    table = Children()
    w = FakeWorker("age7")
    table.expect("shop", 7, 100, w)
    assert table.pending_workers() == [w]
    claimed = table.claim("shop", 7, 100)
    assert claimed == PendingSpawn("shop", 7, 100, w)
    assert table.pending_workers() == []
    assert table.claim("shop", 7, 100) is None  # claimed once


def test_only_the_preloader_asked_may_claim() -> None:
    table = Children()
    w = FakeWorker("age7")
    table.expect("shop", 7, 100, w)
    assert table.claim("shop", 7, 666) is None
    assert table.pending_workers() == [w]  # a wrong claim leaves the request in place
    assert table.claim("shop", 7, 100) is not None


def test_requests_are_keyed_by_app_and_age() -> None:
    table = Children()
    shop, blog = FakeWorker("shop7"), FakeWorker("blog7")
    table.expect("shop", 7, 100, shop)
    table.expect("blog", 7, 200, blog)
    assert table.claim("blog", 7, 100) is None  # the shop preloader cannot claim blog's request
    assert table.claim("shop", 8, 100) is None
    assert claimed(table, "blog", 7, 200).worker is blog
    assert claimed(table, "shop", 7, 100).worker is shop


def test_drop_pending_hands_back_the_worker_objects() -> None:
    table = Children()
    workers = {age: FakeWorker(f"age{age}") for age in (1, 2, 3)}
    for age, w in workers.items():
        table.expect("shop", age, 100, w)
    table.expect("blog", 2, 200, FakeWorker("blog2"))
    assert table.drop_pending("shop", [1, 3, 99]) == [workers[1], workers[3]]
    assert table.drop_pending("shop", [1]) == []
    assert [w.name for w in table.pending_workers()] == ["age2", "blog2"]


def test_pending_requests_are_not_children(children: Children) -> None:
    children.expect("shop", 9, 100, FakeWorker("age9"))
    assert len(children) == 5 and len(children.workers) == 3
