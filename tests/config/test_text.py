"""Escaping control characters and masking routing keys: pure functions, tables of cases."""

from __future__ import annotations

import pytest

from config.text import MASK, mask_routing_keys, printable

KEY = "Ab3dEfGh1jKlMn0pQrStUvWxYz123456"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain text, ünïcode and 漢字", "plain text, ünïcode and 漢字"),
        ("clear\x1b[2Jscreen", "clear\\x1b[2Jscreen"),
        ("two\nlines\r\n", "two\\nlines\\r\\n"),
        ("tab\there", "tab\\there"),
        ("nul\x00 del\x7f", "nul\\x00 del\\x7f"),
        ("c1 csi\x9b2J nel\x85", "c1 csi\\x9b2J nel\\x85"),
        ("separators\u2028\u2029", "separators\\u2028\\u2029"),
        ("bidi \u202egnp.exe", "bidi \\u202egnp.exe"),
        ("\u2066isolate\u2069 \u200fmark", "\\u2066isolate\\u2069 \\u200fmark"),
        (b"not utf-8 \xff".decode("utf-8", "surrogateescape"), "not utf-8 \\xff"),
        ("lone \ud800", "lone \\ud800"),
        ("a backslash \\n stays", "a backslash \\n stays"),
        (42, "42"),
        (None, "None"),
    ],
)
def test_printable_escapes_control_characters(value: object, shown: str) -> None:
    assert printable(value) == shown


def test_printable_gives_one_line_that_encodes_and_is_stable() -> None:
    hostile = "".join(chr(c) for c in range(0x00, 0xA0)) + "\u2028\u202e\udcff\ud800"
    shown = printable(hostile)
    assert shown.isprintable()
    assert len(shown.splitlines()) == 1
    shown.encode("utf-8")  # a terminal's encoder takes it
    assert printable(shown) == shown


@pytest.mark.parametrize(
    ("text", "keys", "masked"),
    [
        (f"key {KEY} unknown", [KEY], f"key {MASK} unknown"),
        (f"key {KEY.lower()}", [KEY], f"key {MASK}"),
        (f"glued:{KEY}xyz", [KEY], f"glued:{MASK}xyz"),
        (f"routing_key={KEY}", [], f"routing_key={MASK}"),
        ("32 letters abcdefghijklmnopqrstuvwxyzabcdef", [], f"32 letters {MASK}"),
        ("33 letters abcdefghijklmnopqrstuvwxyzabcdefg", [], "33 letters "
                                                             "abcdefghijklmnopqrstuvwxyzabcdefg"),
        (f"{KEY}\n{KEY}", [], f"{MASK}\n{MASK}"),
        ("monitao-monitor-9-incident-fl", ["x" * 32], "monitao-monitor-9-incident-fl"),
        ("nothing", [""], "nothing"),
    ],
)
def test_mask_routing_keys(text: str, keys: list[str], masked: str) -> None:
    assert mask_routing_keys(text, keys) == masked


def test_only_the_given_keys_when_key_shaped_tokens_are_kept() -> None:
    hex_id = "9f1c2e3d4b5a69788796a5b4c3d2e1f0"
    assert mask_routing_keys(f"{hex_id} {KEY}", [KEY], key_shaped=False) == f"{hex_id} {MASK}"
