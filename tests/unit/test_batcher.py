"""Unit tests of the dynamic batcher: order, batch formation, limits, errors, cancellation, close.

`infer` here is a plain function behind a gate (a semaphore), so a test decides when a batch
finishes: requests submitted while a batch is held queue up and must form the next batch.
No test measures time; timeouts only stop a hung test.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from nfl_mlops.serving.batcher import BatcherClosed, DynamicBatcher

GUARD = 30.0  # seconds before a hung test fails (never reached when the code is right)


class Model:
    """Records each batch; a gated model runs a batch only when the test `allow`s one."""

    def __init__(self, fail_on: str | None = None, gated: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.gated = gated
        self._permits = threading.Semaphore(0)
        self._entered = threading.Semaphore(0)
        self.fail_on = fail_on
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def allow(self, n: int = 1) -> None:
        """Let `n` more batches through the gate."""
        for _ in range(n):
            self._permits.release()

    def open(self) -> None:
        self.gated = False
        self.allow(1000)

    async def entered(self) -> None:
        """Wait until one more batch has entered the model."""
        assert await asyncio.to_thread(self._entered.acquire, True, GUARD), "no batch entered the model"

    def __call__(self, texts: list[str]) -> list[str]:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            self.batches.append(list(texts))
            self._entered.release()
            if self.gated:
                assert self._permits.acquire(timeout=GUARD), "test gate never opened"
            if self.fail_on is not None and self.fail_on in texts:
                raise ValueError(f"cannot score {self.fail_on!r}")
            return [t.upper() for t in texts]
        finally:
            with self._lock:
                self.running -= 1


async def _until(predicate, what: str) -> None:
    for _ in range(int(GUARD / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def _queued(b: DynamicBatcher, n: int) -> None:
    await _until(lambda: b._queue is not None and b._queue.qsize() >= n, f"{n} queued requests")


async def test_results_come_back_in_order_for_every_caller() -> None:
    model = Model()
    b = DynamicBatcher(model, max_batch_size=8, max_wait_ms=1)
    requests = [[f"r{r}-t{i}" for i in range(r % 5 + 1)] for r in range(40)]
    results = await asyncio.wait_for(asyncio.gather(*(b.submit(t) for t in requests)), GUARD)
    assert results == [[t.upper() for t in texts] for texts in requests]
    assert sum(len(x) for x in model.batches) == sum(len(r) for r in requests)
    assert b.items == sum(len(r) for r in requests)
    await b.close()


async def test_empty_request_needs_no_forward() -> None:
    model = Model()
    b = DynamicBatcher(model)
    assert await b.submit([]) == []
    assert model.batches == []
    await b.close()


async def test_requests_waiting_during_a_forward_form_the_next_batch() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()  # "a" is in the model; the next ten queue up behind it
    rest = [asyncio.create_task(b.submit([f"q{i}"])) for i in range(10)]
    await _queued(b, 10)
    model.open()
    assert await asyncio.wait_for(first, GUARD) == ["A"]
    assert [await r for r in rest] == [[f"Q{i}"] for i in range(10)]
    assert model.batches == [["a"], [f"q{i}" for i in range(10)]]
    assert b.batches == 2
    await b.close()


async def test_max_batch_size_is_never_exceeded() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_batch_size=16, max_wait_ms=0)
    blocker = asyncio.create_task(b.submit(["first"]))
    await model.entered()
    singles = [asyncio.create_task(b.submit([f"s{i}"])) for i in range(37)]
    big = asyncio.create_task(b.submit([f"big{i}" for i in range(50)]))  # more than one batch alone
    pairs = [asyncio.create_task(b.submit([f"p{i}a", f"p{i}b"])) for i in range(9)]
    model.open()
    await asyncio.wait_for(asyncio.gather(blocker, *singles, big, *pairs), GUARD)
    assert all(1 <= len(batch) <= 16 for batch in model.batches), [len(x) for x in model.batches]
    assert big.result() == [f"BIG{i}" for i in range(50)]
    assert [p.result() for p in pairs] == [[f"P{i}A", f"P{i}B"] for i in range(9)]
    # a request's texts are never split across batches unless it is larger than a batch
    for i in range(9):
        assert any(
            [f"p{i}a", f"p{i}b"] == batch[j : j + 2] for batch in model.batches for j in range(len(batch))
        )
    # the queue was drained in full batches: 1 + 37 + 50 + 18 texts after the first one
    assert sum(len(x) for x in model.batches) == 1 + 37 + 50 + 18
    assert len(model.batches) <= 1 + -(-(37 + 50 + 18) // 16) + 2


async def test_a_failed_batch_fails_every_waiter_in_it_and_the_worker_survives() -> None:
    model = Model(fail_on="boom", gated=True)
    b = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0)
    blocker = asyncio.create_task(b.submit(["ok"]))
    await model.entered()
    together = [asyncio.create_task(b.submit([t])) for t in ("x", "boom", "y")]
    await _queued(b, 3)
    model.open()
    assert await asyncio.wait_for(blocker, GUARD) == ["OK"]
    outcomes = await asyncio.wait_for(asyncio.gather(*together, return_exceptions=True), GUARD)
    assert all(isinstance(o, ValueError) and "boom" in str(o) for o in outcomes), outcomes
    assert model.batches[1] == ["x", "boom", "y"]
    # the worker still serves
    assert await asyncio.wait_for(b.submit(["after"]), GUARD) == ["AFTER"]
    await b.close()


async def test_a_wrong_number_of_results_is_an_error_not_a_silent_shift() -> None:
    b = DynamicBatcher(lambda texts: texts[:-1], max_batch_size=8, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="2 results for 3 texts"):
        await asyncio.wait_for(b.submit(["a", "b", "c"]), GUARD)
    await b.close()


async def test_a_failing_on_batch_hook_does_not_stop_serving() -> None:
    def hook(size: int, seconds: float) -> None:
        raise RuntimeError("metrics backend down")

    b = DynamicBatcher(Model(), on_batch=hook, max_wait_ms=0)
    assert await asyncio.wait_for(b.submit(["a"]), GUARD) == ["A"]
    assert await asyncio.wait_for(b.submit(["b"]), GUARD) == ["B"]
    await b.close()


async def test_on_batch_sees_each_batch_size() -> None:
    seen: list[int] = []
    model = Model(gated=True)
    b = DynamicBatcher(model, on_batch=lambda n, s: seen.append(n), max_wait_ms=0)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    rest = [asyncio.create_task(b.submit([f"t{i}", f"u{i}"])) for i in range(3)]
    await _queued(b, 3)
    model.open()
    await asyncio.wait_for(asyncio.gather(first, *rest), GUARD)
    assert seen == [1, 6]
    await b.close()


async def test_a_request_cancelled_while_queued_is_never_run() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_wait_ms=0)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    gone = asyncio.create_task(b.submit(["gone"]))
    kept = asyncio.create_task(b.submit(["kept"]))
    await _queued(b, 2)
    gone.cancel()
    model.open()
    assert await asyncio.wait_for(kept, GUARD) == ["KEPT"]
    assert await first == ["A"]
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert all("gone" not in batch for batch in model.batches)
    await b.close()


async def test_a_request_cancelled_during_inference_leaves_the_others_answered() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_wait_ms=0)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    mates = [asyncio.create_task(b.submit([t])) for t in ("x", "y", "z")]
    await _queued(b, 3)
    model.allow()  # "a" finishes; x, y, z enter the model together and wait at the gate
    assert await asyncio.wait_for(first, GUARD) == ["A"]
    await model.entered()
    mates[1].cancel()  # the caller of "y" goes away while its batch is in the model
    await asyncio.sleep(0)
    model.allow()
    assert await asyncio.wait_for(mates[0], GUARD) == ["X"]
    assert await asyncio.wait_for(mates[2], GUARD) == ["Z"]
    with pytest.raises(asyncio.CancelledError):
        await mates[1]
    assert model.batches[1] == ["x", "y", "z"]
    model.open()
    assert await asyncio.wait_for(b.submit(["next"]), GUARD) == ["NEXT"]
    await b.close()


async def test_a_cancelled_big_request_drops_its_remaining_chunks() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_batch_size=4, max_wait_ms=0)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    big = asyncio.create_task(b.submit([f"b{i}" for i in range(12)]))
    await _queued(b, 3)
    big.cancel()
    await asyncio.sleep(0)
    model.open()
    assert await asyncio.wait_for(first, GUARD) == ["A"]
    assert await asyncio.wait_for(b.submit(["c"]), GUARD) == ["C"]
    assert model.batches == [["a"], ["c"]]
    await b.close()


async def test_a_lone_request_does_not_wait_for_company() -> None:
    # max_wait is a minute: a lone request answered within GUARD proves it did not wait for it
    model = Model()
    b = DynamicBatcher(model, max_batch_size=64, max_wait_ms=60_000)
    for i in range(3):
        assert await asyncio.wait_for(b.submit([f"t{i}"]), GUARD) == [f"T{i}"]
    assert model.batches == [["t0"], ["t1"], ["t2"]]
    await b.close()


async def test_after_a_full_batch_the_worker_waits_for_the_callers_to_come_back() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_batch_size=64, max_wait_ms=60_000)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    four = [asyncio.create_task(b.submit([f"x{i}"])) for i in range(4)]
    await _queued(b, 4)
    model.open()
    await asyncio.wait_for(asyncio.gather(first, *four), GUARD)  # the last batch held 4 texts
    # the next requests trickle in: the worker holds the batch open until 4 are there
    late = [asyncio.create_task(b.submit(["y0"]))]
    await asyncio.sleep(0.05)
    late += [asyncio.create_task(b.submit([f"y{i}"])) for i in range(1, 4)]
    assert [await asyncio.wait_for(t, GUARD) for t in late] == [[f"Y{i}"] for i in range(4)]
    assert model.batches[-1] == [f"y{i}" for i in range(4)]
    await b.close()


async def test_close_answers_what_is_queued_then_refuses_new_requests() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_wait_ms=0)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    queued = [asyncio.create_task(b.submit([f"q{i}"])) for i in range(5)]
    await _queued(b, 5)
    closing = asyncio.create_task(b.close())
    await asyncio.sleep(0.01)
    with pytest.raises(BatcherClosed):
        await b.submit(["late"])
    model.open()
    await asyncio.wait_for(closing, GUARD)
    assert await first == ["A"]
    assert [q.result() for q in queued] == [[f"Q{i}"] for i in range(5)]
    assert b.closed


async def test_close_with_a_stuck_model_fails_the_waiters_instead_of_hanging() -> None:
    model = Model(gated=True)
    b = DynamicBatcher(model, max_wait_ms=0)
    first = asyncio.create_task(b.submit(["stuck"]))
    await model.entered()
    queued = asyncio.create_task(b.submit(["queued"]))
    await _queued(b, 1)
    await asyncio.wait_for(b.close(timeout=0.2), GUARD)
    for task in (first, queued):
        with pytest.raises(BatcherClosed):
            await asyncio.wait_for(task, GUARD)
    model.open()  # let the inference thread finish


async def test_batchers_sharing_one_executor_never_run_two_forwards_at_once() -> None:
    model = Model()
    with ThreadPoolExecutor(max_workers=1) as pool:
        b1 = DynamicBatcher(model, max_batch_size=4, max_wait_ms=0, executor=pool)
        b2 = DynamicBatcher(model, max_batch_size=4, max_wait_ms=0, executor=pool)
        calls = [b.submit([f"{i}"]) for i in range(20) for b in (b1, b2)]
        await asyncio.wait_for(asyncio.gather(*calls), GUARD)
        await b1.close()
        await b2.close()
    assert model.max_running == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda t: t, max_batch_size=0)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda t: t, max_wait_ms=-1)


def test_defaults_come_from_the_settings() -> None:
    from nfl_mlops.settings import Settings

    b = DynamicBatcher(lambda t: t)
    defaults = Settings.model_fields
    assert b.max_batch_size == defaults["max_batch_size"].default
    assert b.max_wait == defaults["max_wait_ms"].default / 1000.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "PASSIVE True"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE False"),
        ({"PRE_IMPORT": "1"}, "None False"),
    ],
)
def test_prefer_passive_openmp_only_acts_before_torch_and_respects_an_explicit_choice(env, expected) -> None:
    import os
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "if os.environ.get('PRE_IMPORT'): import torch\n"
        "from nfl_mlops.serving.batcher import prefer_passive_openmp\n"
        "ok = prefer_passive_openmp()\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), ok)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


async def test_a_full_queue_sheds_new_requests_at_once_and_recovers() -> None:
    from nfl_mlops.serving.batcher import Overloaded

    model = Model(gated=True)
    b = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0, max_queued=4)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()  # "a" runs; four texts may wait behind it
    waiting = [asyncio.create_task(b.submit([f"q{i}"])) for i in range(2)]
    waiting.append(asyncio.create_task(b.submit(["q2", "q3"])))
    await _queued(b, 3)
    assert b.waiting == 4
    with pytest.raises(Overloaded, match="4 texts already wait"):
        await b.submit(["one too many"])
    assert b.shed == 1 and model.batches == [["a"]]  # refused without a forward pass
    model.open()
    assert await asyncio.wait_for(first, GUARD) == ["A"]
    assert [await w for w in waiting] == [["Q0"], ["Q1"], ["Q2", "Q3"]]
    assert b.waiting == 0
    assert await b.submit(["again"]) == ["AGAIN"]  # room again
    await b.close()


async def test_a_request_that_waited_too_long_is_shed_not_computed() -> None:
    from nfl_mlops.serving.batcher import Overloaded

    model = Model(gated=True)
    b = DynamicBatcher(model, max_batch_size=64, max_wait_ms=0, max_queue_wait_s=0.05)
    first = asyncio.create_task(b.submit(["a"]))
    await model.entered()
    late = asyncio.create_task(b.submit(["stale"]))
    await _queued(b, 1)
    await asyncio.sleep(0.2)  # longer than max_queue_wait_s behind the running batch
    model.open()
    assert await asyncio.wait_for(first, GUARD) == ["A"]
    with pytest.raises(Overloaded, match="waited"):
        await asyncio.wait_for(late, GUARD)
    assert model.batches == [["a"]] and b.shed == 1 and b.waiting == 0
    await b.close()


class SlowModel:
    """A forward pass that takes `seconds_per_text` per text (real sleeping), so the batcher measures a rate."""

    def __init__(self, seconds_per_text: float) -> None:
        self.seconds_per_text = seconds_per_text
        self.batches: list[int] = []

    def __call__(self, texts: list[str]) -> list[str]:
        import time

        self.batches.append(len(texts))
        time.sleep(self.seconds_per_text * len(texts))
        return [t.upper() for t in texts]


async def test_a_request_whose_expected_wait_is_too_long_is_refused_at_once() -> None:
    """Measured at ~50 texts/s, 40 waiting texts are ~0.8 s of work: with a 0.3 s bound the next request is
    refused before it queues (reason expected_wait), not left to expire."""
    from nfl_mlops.serving.batcher import Overloaded

    model = SlowModel(0.02)
    b = DynamicBatcher(model, max_batch_size=4, max_wait_ms=0, max_queue_wait_s=0.3)
    assert await b.submit(["cold", "first", "forward", "ignored"]) == ["COLD", "FIRST", "FORWARD", "IGNORED"]
    assert b.expected_wait_s(1) == 0  # the first forward is cold: it says nothing about the model's speed
    assert await b.submit(["warm", "up", "the", "rate"]) == ["WARM", "UP", "THE", "RATE"]
    assert 30 < 1 / (b.expected_wait_s(1) or 1) < 80  # about 50 texts/s, measured
    running = asyncio.create_task(b.submit(["r1", "r2", "r3", "r4"]))
    await _until(lambda: len(model.batches) == 3, "the third forward")
    backlog = asyncio.create_task(b.submit([f"t{i}" for i in range(12)]))  # ~0.24 s: admitted
    await _until(lambda: b.waiting == 12, "the backlog to queue")
    with pytest.raises(Overloaded, match="s of work waits for the model") as info:
        await b.submit([f"late{i}" for i in range(8)])  # 20 texts ahead: ~0.4 s > 0.3 s
    assert info.value.reason == "expected_wait" and b.shed == 1
    assert len(await running) == 4 and len(await backlog) == 12  # the admitted ones are all answered
    await b.close()


async def test_a_cold_first_forward_and_lone_requests_do_not_make_a_backlog_look_expensive() -> None:
    """A cold first forward (0.5 s here) and a batch of one (0.05 s, 20 texts/s) would put 40 queued texts at
    2-20 s of work and refuse most of them under a 1 s bound; served in batches of 8 they take 0.3 s. Until a
    loaded batch has been measured, nothing is refused for its expected wait."""

    class ColdModel:
        def __init__(self) -> None:
            self.batches: list[int] = []

        def __call__(self, texts: list[str]) -> list[str]:
            import time

            time.sleep(0.5 if not self.batches else 0.045 + 0.001 * len(texts))
            self.batches.append(len(texts))
            return texts

    model = ColdModel()
    b = DynamicBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue_wait_s=1.0)
    assert await b.submit(["cold"]) == ["cold"] and await b.submit(["lone"]) == ["lone"]
    assert b.expected_wait_s(40) == 0  # nothing measured yet that says what a backlog costs
    rest = [asyncio.create_task(b.submit([f"t{i}"])) for i in range(40)]
    assert [len(await r) for r in rest] == [1] * 40  # none refused
    assert b.shed == 0 and model.batches[2:] == [8] * 5
    assert 40 < 1 / b.expected_wait_s(1) < 200  # measured on the loaded batches: about 150 texts/s
    await b.close()
