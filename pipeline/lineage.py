"""A stage as a recorded run: started before it works, failed with the reason if it raises, finished with its
metrics. Shared by the training and policy stages (``reward_model.stage``, ``policy.stage``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.models import Run
from db.runs import fail_run, finish_run, start_run


def is_main_process() -> bool:
    """False on the other ranks of an ``accelerate launch`` / ``torchrun``: only rank 0 records runs and cards."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def recorded_run(sessions: sessionmaker[Session], kind: str, config: dict[str, Any], *,
                 parents: Sequence[int | None], name: str, output_path: str | None) -> Iterator[int | None]:
    """Yields the new run's id (parents not in this store are dropped); marks it failed if the body raises. On the
    other ranks of a multi-process launch nothing is recorded and the id is None."""
    if not is_main_process():
        yield None
        return
    with sessions.begin() as session:
        inputs = [p for p in dict.fromkeys(parents) if p is not None and session.get(Run, p) is not None]
        run_id = start_run(session, kind, config, inputs=inputs, name=name, output_path=output_path).id
    try:
        yield run_id
    except BaseException as exc:
        with sessions.begin() as session:
            fail_run(session, session.get(Run, run_id),
                     "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)[:2000])
        raise


def finish_recorded(sessions: sessionmaker[Session], run_id: int | None, metrics: dict[str, Any]) -> None:
    """Mark a run from ``recorded_run`` succeeded with its (JSON-able) metrics; nothing on the other ranks."""
    if run_id is None:
        return
    with sessions.begin() as session:
        finish_run(session, session.get(Run, run_id), json.loads(json.dumps(metrics, default=str)))
