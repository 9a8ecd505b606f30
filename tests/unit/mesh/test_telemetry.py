"""Trace context carried without OpenTelemetry's instrumentation: a served call continues its
caller's trace (W3C `traceparent`) with a span of its own, or starts one when the header is
missing or malformed."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from mesh.telemetry import TRACEPARENT, continued_trace, trace_header

TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _current() -> trace.SpanContext:
    return trace.get_current_span().get_span_context()


def test_a_call_continues_its_callers_trace_with_a_span_of_its_own_and_passes_it_on() -> None:
    with continued_trace([("x-request-id", "r1"), (TRACEPARENT, f"00-{TRACE_ID}-{PARENT_ID}-01")]):
        current = _current()
        ((key, passed_on),) = trace_header()

    assert format(current.trace_id, "032x") == TRACE_ID
    assert format(current.span_id, "016x") != PARENT_ID
    assert current.trace_flags.sampled
    assert (key, passed_on) == (TRACEPARENT, f"00-{TRACE_ID}-{current.span_id:016x}-01")
    assert not _current().is_valid  # the call's context ends with it


@pytest.mark.parametrize(
    "header",
    [
        None,
        f"00-{TRACE_ID}-{PARENT_ID}",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        f"00-{TRACE_ID}0-{PARENT_ID}-01",
    ],
)
def test_a_call_without_a_valid_traceparent_starts_a_trace(header: str | None) -> None:
    with continued_trace([(TRACEPARENT, header)] if header else []):
        current = _current()

    assert current.is_valid
    assert format(current.trace_id, "032x") != TRACE_ID
    assert not current.trace_flags.sampled


def test_outside_any_call_nothing_is_passed_on() -> None:
    assert trace_header() == ()
