"""Names and reasons: the two checks every command shares."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from quipu.core.errors import InvalidInput
from quipu.core.validation import MIN_REASON_LENGTH, check_name, check_reason

# Mostly name-like text, with the characters that matter mixed in often enough to be found.
name_chars = st.sampled_from("abcXYZ019_-.") | st.sampled_from(["/", "\\", "\x00", "\n", "\x1f",
                                                                  "\x7f", " ", "é", ".."])
candidate_names = st.lists(name_chars, max_size=70).map("".join) | st.text(max_size=80)


# --- check_name --------------------------------------------------------------------------------


@given(candidate_names)
@example("a" * 64)
@example("a" * 65)
@example("a..b")
@example("lr/sweep")
@example("tab\there")
@example("ok\n")
def test_a_name_is_either_safe_or_refused_as_invalid_name(value):
    try:
        accepted = check_name(value)
    except InvalidInput as err:
        assert err.code == "invalid_name"
        assert err.hint
        return
    assert accepted == value
    assert 1 <= len(accepted) <= 64
    assert "/" not in accepted and "\\" not in accepted
    assert ".." not in accepted
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in accepted)


@given(st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,62}[A-Za-z0-9])?", fullmatch=True))
def test_letters_digits_dashes_and_underscores_are_accepted(value):
    assert check_name(value) == value


@pytest.mark.parametrize("value", ["", "a" * 65, "../etc", "a/b", "a\\b", "a..b", "ctl\x07",
                                   "-leading", "trailing.", "with space", "naïve"])
def test_unsafe_names_are_refused(value):
    with pytest.raises(InvalidInput) as err:
        check_name(value)

    assert err.value.code == "invalid_name" and err.value.hint


def test_the_refusal_names_what_was_being_named():
    with pytest.raises(InvalidInput, match="invalid tag name"):
        check_name("a/b", what="tag")


def test_the_refusal_lists_every_problem():
    with pytest.raises(InvalidInput) as err:
        check_name("../" + "x" * 70)

    message = str(err.value)
    assert "at most 64" in message and "path separator" in message and "'..'" in message


# --- check_reason ------------------------------------------------------------------------------


@given(st.text(max_size=40))
def test_a_reason_is_accepted_exactly_when_it_is_long_enough(text):
    stripped = text.strip()
    if len(stripped) >= MIN_REASON_LENGTH:
        assert check_reason(text) == stripped
        return
    with pytest.raises(InvalidInput) as err:
        check_reason(text)
    assert err.value.code == ("reason_too_short" if stripped else "reason_missing")
    assert err.value.hint


@given(st.integers(min_value=1, max_value=40), st.text(min_size=1, max_size=60))
def test_the_minimum_length_is_configurable(minimum, text):
    stripped = text.strip()
    if len(stripped) >= minimum:
        assert check_reason(text, minimum=minimum) == stripped
    else:
        with pytest.raises(InvalidInput):
            check_reason(text, minimum=minimum)


def test_a_missing_reason_is_refused():
    with pytest.raises(InvalidInput) as err:
        check_reason(None)

    assert err.value.code == "reason_missing"


def test_whitespace_padding_does_not_count_towards_the_length():
    with pytest.raises(InvalidInput) as err:
        check_reason("   short   " + " " * 20)

    assert err.value.code == "reason_too_short" and "'short'" in str(err.value)


def test_the_refusal_names_the_field():
    with pytest.raises(InvalidInput, match="message of at least 15"):
        check_reason("wip", what="message")
