"""The default wait schedule sees an operation finish within max(2 s, 5 % of its duration) (issue 4's goal)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runbooks.engine import PollPolicy


def detection_delay(policy: PollPolicy, duration: float) -> float:
    waited, delay = 0.0, policy.initial
    while True:
        waited += delay
        if waited >= duration:
            return waited - duration
        delay = policy.next_delay(delay, waited=waited)


@settings(max_examples=300)
@given(st.floats(min_value=0.1, max_value=6 * 3600))
def test_overhead_is_bounded(duration: float) -> None:
    policy = PollPolicy()
    assert detection_delay(policy, duration) <= max(2.0, 0.05 * duration)


def test_polls_stay_polite_for_long_operations() -> None:
    policy = PollPolicy()
    waited, delay, polls = 0.0, policy.initial, 0
    while waited < 3600:
        waited += delay
        polls += 1
        delay = policy.next_delay(delay, waited=waited)
    assert polls < 300, "an hour-long restore is polled a few times a minute, not every second"
    assert delay == policy.maximum
