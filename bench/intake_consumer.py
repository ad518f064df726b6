"""One intake consumer (producer/intake.py) as its own process, for `make bench`'s stream
intake row: `python -m bench.intake_consumer`, configured from MONITAO_PD_*; it prints
" ready." once it reads the stream and stops on SIGTERM."""

from __future__ import annotations

import signal
import sys

from config.settings import load_settings
from producer.intake import IntakeConsumer
from producer.producer import AlertProducer


def main() -> int:
    producer = AlertProducer(load_settings())
    consumer = IntakeConsumer(producer)
    consumer.ensure_group()
    signal.signal(signal.SIGTERM, lambda *_: consumer._stop.set())
    print(" ready.", flush=True)
    consumer.run()
    consumer.stop()
    producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
