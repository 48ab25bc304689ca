"""Realistic mistakes with keel.RateLimiter and keel.check_all, and the messages they must give:
each names the argument, the offending value or type, or the path (never a key's value)."""

from __future__ import annotations

import pytest

import keel

BIG = 2**70


def _limiter() -> keel.RateLimiter:
    return keel.RateLimiter(10, 60)


MISTAKES = [
    # (what the user wrote, exception, message pattern)
    (lambda: _limiter().check(12345), TypeError, r"key must be a str, not int"),
    (lambda: _limiter().check(b"1.2.3.4"), TypeError, r"key must be a str, not bytes"),
    (lambda: _limiter().check(None), TypeError, r"key must be a str, not NoneType"),
    (lambda: _limiter().check("k", 1.5), TypeError, r"cost must be an int, not float"),
    (lambda: _limiter().check("k", "2"), TypeError, r"cost must be an int, not str"),
    (
        lambda: _limiter().check("k", -1),
        keel.InvalidArgument,
        r"cost must not be negative \(got -1\)",
    ),
    (
        lambda: _limiter().check("k", BIG),
        keel.InvalidArgument,
        rf"cost must be at most .*got {BIG}",
    ),
    (lambda: _limiter().check("k", 11), keel.RateLimitConfigError, r"cost 11 can never fit"),
    (lambda: keel.RateLimiter("10", 60), TypeError, r"limit must be an int, not str"),
    (lambda: keel.RateLimiter(10.0, 60), TypeError, r"limit must be an int, not float"),
    (lambda: keel.RateLimiter(-5, 60), keel.RateLimitConfigError, r"at least 1 \(got -5\)"),
    (lambda: keel.RateLimiter(BIG, 60), keel.RateLimitConfigError, rf"at most .*got {BIG}"),
    (lambda: keel.RateLimiter(10, "60"), TypeError, r"window must be a number of seconds"),
    (lambda: keel.RateLimiter(10, float("nan")), keel.RateLimitConfigError, r"got NaN"),
    (lambda: keel.RateLimiter(10, float("inf")), keel.RateLimitConfigError, r"got inf"),
    (lambda: keel.RateLimiter(10, -1), keel.RateLimitConfigError, r"got -1"),
    (lambda: keel.RateLimiter(10, 10**400), keel.RateLimitConfigError, r"window of 1000"),
    (lambda: keel.RateLimiter(10, 1e-9), keel.RateLimitConfigError, r"between 1 ms and one year"),
    (lambda: keel.RateLimiter(10, 60, max_keys=0), keel.InvalidArgument, r"at least 1 \(got 0\)"),
    (lambda: keel.RateLimiter(10, 60, max_keys=-1), keel.InvalidArgument, r"\(got -1\)"),
    (lambda: keel.RateLimiter(10, 60, max_keys=BIG), keel.InvalidArgument, rf"got {BIG}"),
    (lambda: keel.RateLimiter(10, 60, max_keys="9"), TypeError, r"max_keys must be an int"),
    (
        lambda: keel.RateLimiter(10, 60, shared_path=42),
        TypeError,
        r"shared_path must be a str or os",
    ),
    (lambda: keel.check_all([(_limiter(), 7)]), TypeError, r"key must be a str, not int"),
    (lambda: keel.check_all([(_limiter(), "k")], cost=-2), keel.InvalidArgument, r"got -2"),
    (lambda: _limiter().set_override(5, 1, 60), TypeError, r"key must be a str, not int"),
    (lambda: _limiter().set_override("k", 1, None), TypeError, r"window must be a number"),
    (lambda: _limiter().remove_override(5), TypeError, r"key must be a str, not int"),
]


@pytest.mark.parametrize(("mistake", "exc", "match"), MISTAKES, ids=[m for *_, m in MISTAKES])
def test_mistake_gives_a_clear_message(mistake, exc, match):
    with pytest.raises(exc, match=match):
        mistake()


def test_shared_path_in_a_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / "missing-dir" / "rl"
    with pytest.raises(keel.RateLimitStateError, match="missing-dir") as info:
        keel.RateLimiter(3, 60, shared_path=missing)
    message = str(info.value)
    assert str(missing) in message and "does the folder" in message


def test_shared_key_bound_beyond_the_maximum_names_the_value(tmp_path):
    with pytest.raises(keel.InvalidArgument, match=r"got 1099511627776"):
        keel.RateLimiter(3, 60, shared_path=tmp_path / "rl", max_keys=2**40)
