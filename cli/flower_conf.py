"""Flower's configuration file for `monitao-pd flower` (tornado executes it; nothing imports it).

Basic auth comes from the environment variable `monitao-pd flower` sets, as a list of one
`user:password` entry: tornado takes a list whole, whereas `FLOWER_BASIC_AUTH` and
`--basic-auth` are split on commas, which refused a password such as `S3cret,Tail` and
accepted its halves.
"""

import os as _os

if "MONITAO_PD_FLOWER_CREDENTIALS" in _os.environ:
    basic_auth = [_os.environ.pop("MONITAO_PD_FLOWER_CREDENTIALS")]
