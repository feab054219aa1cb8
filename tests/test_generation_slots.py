"""The per-key generation cap counted in the database, so that it holds across servers on one database.

Store functions on SQLite and PostgreSQL (when TUNELOOM_TEST_POSTGRES_URL is set); two
`GenerationSlots` sharing one database stand for two API servers; concurrent takers race for real
on PostgreSQL, where the primary key alone keeps them within the cap; and two real `tuneloom serve`
processes on one PostgreSQL database refuse one key between them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from tests.process_helpers import prepare_model, queue, running_processes, trained, wait_for
from tests.test_store_support import POSTGRES_URL, make_db_fixture

from tuneloom.server.limits import GenerationSlots, LimitExceeded, SharedSlots, Slot
from tuneloom.store import apps
from tuneloom.store import generation_slots as store
from tuneloom.store.db import Database
from tuneloom.store.keys import create_key
from tuneloom.store.models import GenerationSlot, utcnow

db = make_db_fixture()
PEPPER = b"p" * 32


@pytest.fixture
def key_id(db: Database) -> str:
    apps.create_app(db, "a", "a")
    return create_key(db, "a", PEPPER)[1].id


@pytest.fixture
def servers(db: Database) -> Iterator[tuple[GenerationSlots, GenerationSlots]]:
    """Two servers' slots on the one database, a cap of 2 generations per key."""
    both = (GenerationSlots(2, SharedSlots(db)), GenerationSlots(2, SharedSlots(db)))
    for slots in both:
        slots.start()
    yield both
    for slots in both:
        slots.stop()


def test_a_key_takes_numbered_slots_up_to_its_limit_and_frees_them(db: Database, key_id: str) -> None:
    assert [store.take(db, key_id, 3, "server-a") for _ in range(4)] == [0, 1, 2, None]
    assert store.running(db, key_id) == 3
    store.release(db, key_id, 1, "server-b")  # another server's release does not free this one's slot
    assert store.running(db, key_id) == 3
    store.release(db, key_id, 1, "server-a")
    assert store.take(db, key_id, 3, "server-b") == 1  # the freed number is taken again
    store.release_all(db, "server-a")
    assert store.running(db, key_id) == 1


def test_the_slots_of_a_server_that_stopped_renewing_run_out(db: Database, key_id: str) -> None:
    start = utcnow()
    assert store.take(db, key_id, 2, "dead", lease_s=15, now=start) == 0
    assert store.take(db, key_id, 2, "alive", lease_s=15, now=start) == 1
    later = start + timedelta(seconds=10)
    store.renew(db, "alive", [(key_id, 1)], lease_s=15, now=later)
    after_lease = start + timedelta(seconds=20)
    assert store.running(db, key_id, now=after_lease) == 1  # "dead" went silent; "alive" renewed
    assert store.take(db, key_id, 2, "other", now=after_lease) == 0  # the dead server's number, reused
    assert store.take(db, key_id, 2, "other", now=after_lease) is None


def test_concurrent_takers_never_exceed_the_limit(db: Database, key_id: str) -> None:
    """16 threads (on PostgreSQL, 16 connections really racing) for a cap of 3."""
    got: list[int | None] = []
    barrier = threading.Barrier(16)

    def taker(n: int) -> None:
        barrier.wait()
        got.append(store.take(db, key_id, 3, f"server-{n}"))

    threads = [threading.Thread(target=taker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(n for n in got if n is not None) == [0, 1, 2], got
    assert store.running(db, key_id) == 3


def test_a_second_server_refuses_the_key_over_the_shared_limit(
    servers: tuple[GenerationSlots, GenerationSlots], key_id: str, db: Database
) -> None:
    first, second = servers

    async def scenario() -> None:
        held = [await first.take(key_id), await second.take(key_id)]  # one on each server: the cap of 2
        with pytest.raises(LimitExceeded) as refused:
            await second.take(key_id)
        assert refused.value.status_code == 429 and refused.value.limit == 2
        assert "2 generations running on the servers sharing this database" in str(refused.value.detail)
        assert second.running == {key_id: 1}  # the refused take left this server's count as it was
        await held[0].release()
        async with second.hold(key_id):  # the slot the first server freed
            assert store.running(db, key_id) == 2
        await held[1].release()

    asyncio.run(scenario())
    assert store.running(db, key_id) == 0


def test_a_request_released_while_its_take_still_runs_leaves_no_row(db: Database, key_id: str) -> None:
    """The request left (released) before the database answered its take: the take frees the row itself."""
    shared = SharedSlots(db)
    slots = GenerationSlots(2, shared)
    slot = Slot(slots, key_id, released=True)
    shared.take(slot, 2)
    assert slot.number is None and store.running(db, key_id) == 0
    shared._renew()  # nothing is held, so nothing is renewed back to life


def test_a_cancelled_request_frees_its_slot(
    servers: tuple[GenerationSlots, GenerationSlots], key_id: str, db: Database
) -> None:
    first, _ = servers

    async def scenario() -> None:
        async def generation() -> None:
            async with first.hold(key_id):
                await asyncio.sleep(30)

        task = asyncio.create_task(generation())
        while store.running(db, key_id) == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert store.running(db, key_id) == 0 and first.running == {}


def test_a_server_keeps_renewing_the_slots_it_runs_and_frees_them_when_it_stops(db: Database, key_id: str) -> None:
    shared = SharedSlots(db, lease_s=1.5)  # renewed every 0.5 s
    slots = GenerationSlots(1, shared)
    slots.start()

    async def take() -> Slot:
        return await slots.take(key_id)

    slot = asyncio.run(take())
    threading.Event().wait(3.5)  # well past the lease: only the heartbeat keeps it
    assert store.running(db, key_id) == 1 and slot.number == 0
    slots.stop()
    assert store.running(db, key_id) == 0


@pytest.mark.skipif(not POSTGRES_URL, reason="servers share the count on PostgreSQL (TUNELOOM_TEST_POSTGRES_URL unset)")
def test_two_real_servers_on_one_database_hold_one_keys_cap_between_them(tmp_path: Path) -> None:
    """A key generating on one server is refused a second generation on the other until the first one ends."""
    with running_processes(tmp_path, "postgresql") as procs:
        cap = ("--max-concurrent-generations-per-key", "1")
        _, trains = procs.serve(*cap, "--workers", "1")
        _, other = procs.serve(*cap, "--workers", "0")
        model, headers, dataset_version = prepare_model(trains, procs.data_dir)
        trained(model, headers, queue(model, headers, dataset_version, steps=2))
        on_other = model.replace(trains, other)
        small = {"inputs": ["hi"], "inference_params": {"max_tokens": 2}}
        for url in (model, on_other):  # both load the version now, so that the refusal below is quick
            assert httpx.post(f"{url}/predict", json=small, headers=headers, timeout=60).status_code == 200
        # Long enough to be caught running (~4 s on an idle 2-core machine): 2 sampled answers of 400 tokens,
        # near-uniform over the vocabulary so that neither ends early on EOS.
        long = {"inputs": ["hi"] * 2, "inference_params": {"max_tokens": 400, "temperature": 5.0}}
        database = Database(procs.extra[1])
        try:
            with ThreadPoolExecutor(1) as pool:
                running = pool.submit(httpx.post, f"{model}/predict", json=long, headers=headers, timeout=120)
                wait_for(lambda: slots_held(database) == 1, "the first server's slot")
                refused = httpx.post(f"{on_other}/predict", json=small, headers=headers, timeout=60)
                assert not running.done(), "the long generation ended too soon to test the cap"
                assert running.result().status_code == 200, running.result().text
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "TOO_MANY_GENERATIONS" and refused.json()["details"] == {"limit": 1}
            assert "servers sharing this database" in refused.json()["message"]
            assert slots_held(database) == 0  # freed when the first answer was sent
            answer = httpx.post(f"{on_other}/predict", json=small, headers=headers, timeout=60)
            assert answer.status_code == 200 and answer.json()["outputs"][0]["tokens"] > 0, answer.text
        finally:
            database.dispose()


def slots_held(database: Database) -> int:
    """Generation slots held in the database, by any key on any server."""
    with database.read() as session:
        return session.scalar(select(func.count()).select_from(GenerationSlot)) or 0
