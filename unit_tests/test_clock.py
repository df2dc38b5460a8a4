"""services.clock: the one conversion to Odoo's naive UTC datetimes."""

import datetime

from services.clock import aware_utc, naive_utc

PARIS = datetime.timezone(datetime.timedelta(hours=1))


def test_aware_moments_become_naive_utc_whole_seconds():
    moment = datetime.datetime(2026, 3, 1, 10, 30, 15, 999_999, tzinfo=PARIS)
    assert naive_utc(moment) == datetime.datetime(2026, 3, 1, 9, 30, 15)


def test_naive_moments_are_taken_as_utc():
    moment = datetime.datetime(2026, 3, 1, 9, 30, 15, 250)
    assert naive_utc(moment) == datetime.datetime(2026, 3, 1, 9, 30, 15)


def test_nothing_stays_nothing():
    assert naive_utc(None) is None


def test_aware_utc_reverses_naive_utc():
    moment = datetime.datetime(2026, 3, 1, 9, 30, 15, tzinfo=datetime.UTC)
    assert aware_utc(naive_utc(moment)) == moment
