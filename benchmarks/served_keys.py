"""Served-card inserts as the table grows: random (version 4) against time-ordered card uuids.

``python -m benchmarks.served_keys`` writes batches of served-card rows, as the background
writer does (:meth:`cds_service.storage.feedback.FeedbackStore._write_served`), into a fresh
SQLite database, once with ``uuid.uuid4()`` keys and once with the service's own
:func:`cds_service.guidance.cards.new_uuid`, and prints the CPU time per row of each stretch of
the table. Not part of ``make bench``: a reference for why card uuids begin with the time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cds_service.guidance.cards import new_uuid
from cds_service.storage.database import Database
from cds_service.storage.feedback import FeedbackStore

BATCH = 1500  # about what one worker queues in half a second under the HTTP benchmark's load


def cost_per_row(make_key: Callable[[], str], rows: int, stretches: int) -> list[float]:
    """CPU µs per row for each of ``stretches`` equal stretches of ``rows`` rows."""
    batches = rows // stretches // BATCH  # per stretch
    if batches < 1:
        raise ValueError(f"rows must be at least stretches x {BATCH}")
    with tempfile.TemporaryDirectory(prefix="cds-served-keys-") as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'served.sqlite3'}")
        store = FeedbackStore(database, served_flush_s=0, migrate=True)
        try:
            costs = []
            for _ in range(stretches):
                spent = 0.0
                for _ in range(batches):
                    batch = [
                        {"card_uuid": make_key(), "service_id": "hypermobility-pain-patient-view",
                         "rule_id": "rehab-referral", "hook": "patient-view",
                         "served_at": "2026-11-26T15:00:00+00:00"}
                        for _ in range(BATCH)
                    ]
                    started = time.process_time()
                    store._write_served(batch)
                    spent += time.process_time() - started
                costs.append(round(spent / (batches * BATCH) * 1e6, 1))
            if store.count_served() != stretches * batches * BATCH:
                raise RuntimeError("the served-card writer did not write every row")
            return costs
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=450_000)
    parser.add_argument("--stretches", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU µs per served-card row, in {args.stretches} stretches of "
          f"{args.rows // args.stretches:,} rows (SQLite)")
    for name, make_key in (("random (uuid4)", lambda: str(uuid.uuid4())),
                           ("time-ordered (new_uuid)", new_uuid)):
        costs = cost_per_row(make_key, args.rows, args.stretches)
        print(f"  {name:24s} " + "  ".join(f"{c:5.1f}" for c in costs))


if __name__ == "__main__":
    main()
