"""The watchdog on its own: it acts once on a failure, never on a healthy or stopped worker,
and ends the process itself if the graceful shutdown does not."""

from __future__ import annotations

import threading
import time
import weakref

from app_support import wait_until

from app.inference.watchdog import EXIT_WORKER_FAILED, Watchdog


class Recorder:
    def __init__(self) -> None:
        self.stops = 0
        self.exits: list[int] = []
        self.exited = threading.Event()

    def stop_server(self) -> None:
        self.stops += 1

    def exit(self, code: int) -> None:
        self.exits.append(code)
        self.exited.set()


def watchdog(check, recorder: Recorder, grace_s: float = 60.0) -> Watchdog:  # type: ignore[no-untyped-def]
    return Watchdog(check, grace_s=grace_s, interval_s=0.001,
                    stop_server=recorder.stop_server, exit=recorder.exit)


def test_a_failure_stops_the_server_once_and_finish_exits_with_70() -> None:
    answers = iter([None, None, "the inference worker crashed (boom)"])
    recorder = Recorder()
    dog = watchdog(lambda: next(answers, None), recorder)
    dog.start()
    wait_until(lambda: recorder.stops == 1, what="the watchdog to stop the server")
    assert dog.fired and dog.reason == "the inference worker crashed (boom)"
    dog.finish()  # what the lifespan's shutdown does
    assert recorder.exits == [EXIT_WORKER_FAILED]


def test_a_healthy_worker_is_left_alone() -> None:
    checks: list[int] = []
    recorder = Recorder()
    dog = watchdog(lambda: checks.append(1), recorder)  # always None
    dog.start()
    wait_until(lambda: len(checks) >= 5, what="a few checks")
    dog.finish()
    assert (recorder.stops, recorder.exits, dog.fired) == (0, [], False)


def test_a_shutdown_that_does_not_finish_is_cut_short_by_the_watchdog() -> None:
    recorder = Recorder()
    dog = watchdog(lambda: "stuck", recorder, grace_s=0.0)
    dog.start()
    assert recorder.exited.wait(30)
    assert recorder.stops == 1 and recorder.exits == [EXIT_WORKER_FAILED]


def test_a_failing_check_is_logged_and_watching_goes_on() -> None:
    calls: list[int] = []
    recorder = Recorder()

    def check() -> str | None:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("bug in the check")
        return "the inference worker crashed"

    dog = watchdog(check, recorder)
    dog.start()
    wait_until(lambda: recorder.stops == 1, what="the watchdog to act after two bad checks")
    assert dog.reason == "the inference worker crashed"


def test_when_the_event_loop_itself_is_held_it_exits_at_once_without_a_shutdown() -> None:
    recorder = Recorder()
    dog = Watchdog(lambda: "stuck on the loop", grace_s=3600.0, interval_s=0.001,
                   stop_server=recorder.stop_server, exit=recorder.exit, loop_held=lambda: True)
    dog.start()
    assert recorder.exited.wait(30)  # not after the hour of grace
    assert recorder.stops == 0 and recorder.exits == [EXIT_WORKER_FAILED]


class SlowService:
    """Stands in for the service: the watchdog's check is a bound method of it, so the
    watchdog's thread keeps it, and in the server the model, alive while it runs."""

    def __init__(self) -> None:
        self.checked = threading.Event()

    def failure(self) -> str | None:
        self.checked.set()
        time.sleep(0.05)  # the thread is mid-check when finish() comes
        return None


def test_finish_waits_for_the_thread_so_it_lets_go_of_the_service() -> None:
    # A daemon thread that frees the model while the interpreter exits aborts the process
    # (SIGABRT from libtorch): finish() must leave nothing running that holds it.
    service = SlowService()
    freed = weakref.ref(service)
    dog = watchdog(service.failure, Recorder())
    dog.start()
    assert service.checked.wait(30)
    del service
    dog.finish()
    del dog  # no gc.collect(): a thread still running would keep the watchdog alive
    assert freed() is None
