"""The fleet's benchmark: `make bench` (quick) or `python -m bench --full`. See bench/run.py."""
