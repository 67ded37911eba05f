"""SIGTERM ends the process even when its shutdown hangs: the deadline armed by the first stop signal."""

import threading

from interfaces.shutdown import ShutdownDeadline


def test_a_shutdown_still_running_after_the_grace_period_exits_the_process_with_1():
    exited: list[int] = []
    done = threading.Event()
    deadline = ShutdownDeadline(grace=0.05, exit=lambda code: (exited.append(code), done.set()))
    deadline.arm()
    deadline.arm()   # a second signal does not start a second timer
    assert done.wait(2)
    assert exited == [1]


def test_a_shutdown_that_finishes_in_time_is_left_alone():
    exited: list[int] = []
    deadline = ShutdownDeadline(grace=0.2, exit=exited.append)
    deadline.arm()
    deadline.cancel()
    threading.Event().wait(0.4)
    assert exited == []
