"""A real intake consumer that takes entries and is then SIGKILLed by a test before it
acknowledges them (`python -m tests.producer.intake_holder ENQUEUE_FIRST`).

It takes the lease, reads one batch, enqueues the first ENQUEUE_FIRST of them (as a
consumer killed in the middle of its work would have), prints `holding N`, and waits.
"""

from __future__ import annotations

import sys
import time

from config.settings import load_settings
from producer.intake import IntakeConsumer
from producer.producer import AlertProducer


def main() -> None:
    enqueue_first = int(sys.argv[1])
    producer = AlertProducer(load_settings())
    consumer = IntakeConsumer(producer, name="doomed")
    consumer.ensure_group()
    assert consumer._lease(keys=[consumer.keys.intake_lease],
                           args=[consumer._token, consumer.lease_ms]) == 2
    entries = consumer._read(">")
    prepared = [consumer._prepare(entry_id, fields) for entry_id, fields in entries]
    producer.enqueue(prepared[:enqueue_first])
    print(f"holding {len(entries)}", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
