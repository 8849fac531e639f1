"""Every durable step checks, after its body and before DBOS records its result, that this replica still owns the
workflows (`Binding.owned`; on `drbot serve`'s leader: the epoch fence, which exits a fenced ex-leader). A frozen
ex-leader that wakes up in the middle of a step (a wait that ends without writing anything) must never record that
step first: DBOS would then park the new leader's execution, waiting for the dead one's outcome (issue 11)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from runbooks import workflows


class Recorder:
    """Stands in for the step bodies: every call is recorded in order with the ownership checks; with `fail`, each
    body raises (a database error in a woken ex-leader), which DBOS would record as the step's outcome."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        def body(*args: Any, **kwargs: Any) -> str:
            self.calls.append(name)
            if self.fail:
                raise ConnectionError("terminating connection due to administrator command")
            return f"result of {name}"

        return body


def steps_of_the_module() -> list[Any]:
    return [f for _, f in inspect.getmembers(workflows, inspect.isfunction)
            if hasattr(f, "__wrapped__") and f.__name__.endswith("_step")]


def test_every_step_checks_ownership_after_its_body() -> None:
    found = steps_of_the_module()
    source = inspect.getsource(workflows)
    assert len(found) == source.count("@DBOS.step(") >= 16, [f.__name__ for f in found]
    body = Recorder()
    workflows.bind(workflows.Binding(steps=body, gates=body, pagerduty=body,  # type: ignore[arg-type]
                                     stopping=lambda: False, owned=lambda: body.calls.append("owned"),
                                     ticks=body))  # type: ignore[arg-type]
    try:
        for fail in (False, True):
            body.fail = fail
            for step in found:
                body.calls.clear()
                params = list(inspect.signature(step.__wrapped__).parameters)
                if fail:
                    with pytest.raises(ConnectionError):
                        step.__wrapped__(*([{}] * len(params)))
                else:
                    step.__wrapped__(*([{}] * len(params)))
                assert body.calls and body.calls[-1] == "owned" and body.calls.count("owned") == 1, \
                    (step.__name__, fail, body.calls)
                assert len(body.calls) >= 2, f"{step.__name__} checked ownership without running its body"
    finally:
        workflows.bind(None)
