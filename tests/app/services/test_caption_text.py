"""The caption text rule: what a model answered, fit to store."""

from __future__ import annotations

import doctest

import pytest

from app.services import caption_text
from app.services.caption_text import clean_caption

pytestmark = pytest.mark.nodb


def test_doctests_pass() -> None:
    assert doctest.testmod(caption_text).failed == 0


def test_nul_and_control_characters_are_removed() -> None:
    assert clean_caption("a\x00b\x07c\x7fd\x9be") == "abcde"


def test_newlines_and_tabs_stay() -> None:
    assert clean_caption("<bo>\n\tand <mia>") == "<bo>\n\tand <mia>"


def test_lone_surrogates_are_removed() -> None:
    assert clean_caption("a\ud800b") == "ab"


def test_letters_emoji_and_joiners_stay() -> None:
    text = "Ünïcödé 🐕‍🦺 café"
    assert clean_caption(text) == text
