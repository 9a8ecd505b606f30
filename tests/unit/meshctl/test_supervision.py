from __future__ import annotations

import signal

from meshctl.supervision import RestartPolicy, exit_reason


def policy() -> RestartPolicy:
    return RestartPolicy(backoff=0.5, backoff_cap=4.0, limit=5, window=60.0)


def test_each_exit_within_the_window_doubles_the_wait_up_to_the_cap() -> None:
    restarts = policy()
    assert [restarts.after_exit(float(second)) for second in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_one_exit_more_than_the_limit_within_the_window_gives_the_part_up() -> None:
    restarts = policy()
    for second in range(5):
        assert restarts.after_exit(float(second)) is not None
    assert restarts.after_exit(5.0) is None


def test_exits_older_than_the_window_are_forgotten() -> None:
    restarts = policy()
    for second in range(5):
        restarts.after_exit(float(second))
    # A minute later the part has run well: its next exit waits the shortest time again.
    assert restarts.after_exit(100.0) == 0.5


def test_exit_reasons_name_the_code_or_the_signal() -> None:
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(0) == "exit code 0"
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(-99) == "killed by signal 99"
