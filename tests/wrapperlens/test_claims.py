"""wrapperlens.claims: a claim's status from its per-seed values, against hand-made values."""

import math

import pytest

from wrapperlens.claims import Claim, Measured, claim_record, decide

NAN = math.nan
CLAIM = Claim(1, "a claim", "the paper's words", "margin", 0.0, lambda results: Measured([]))


@pytest.mark.parametrize("values, status", [
    ([0.1, 0.2, 0.3], "reproduced"),
    ([-0.1, 0.0, -0.3], "not reproduced"),  # on the threshold is not above it
    ([-0.1, 0.2], "inconclusive"),
    ([], "not covered"),
])
def test_decide_reads_where_the_values_lie_against_the_threshold(values, status):
    assert decide(values, 0.0) == status


def test_a_claim_with_no_values_is_not_covered():
    record = claim_record(CLAIM, Measured([], note="the grid has no such runs"))
    assert record["status"] == "not covered" and record["mean"] is None
    assert record["note"] == "the grid has no such runs"


def test_a_claim_whose_every_value_is_undefined_is_undefined_not_uncovered():
    """The runs exist (one value per seed), but the quantity is undefined on each: the claim was
    run and decides nothing, which "not covered" (no runs) would misreport."""
    record = claim_record(CLAIM, Measured([NAN, NAN, NAN], note="no gap to keep"))
    assert record["status"] == "undefined"
    assert record["values"] == [] and record["spread"] is None
    assert "no gap to keep" in record["note"] and "3 undefined values left out" in record["note"]


def test_undefined_values_are_left_out_and_the_rest_decide():
    record = claim_record(CLAIM, Measured([0.2, NAN, 0.4], floor=0.25))
    assert record["status"] == "reproduced" and record["values"] == [0.2, 0.4]
    assert record["mean"] == pytest.approx(0.3) and record["spread"] == [0.2, 0.4]
    assert record["floor"] == 0.25 and "1 undefined values left out" in record["note"]
