"""reFT curves: metrics.jsonl parsing, iterations-to-threshold against a brute-force scan, plots."""

import json

import matplotlib.image
import pytest

from wrapperlens.analysis.reft_curves import (
    ReftCurve,
    accuracy_curve,
    curves_to_threshold,
    iterations_to_threshold,
    plot_reft_curves,
    read_metrics,
)

METRIC = "acc/O_PT/cte0"
RECORDS = [
    {"step": 0, METRIC: 0.05, "acc/O_FT/cte0": 0.9},
    {"step": 1, METRIC: 0.05},
    {"step": 2, "loss": 1.0},  # a line without the metric is skipped
    {"step": 5, METRIC: 0.40},
    {"step": 10, METRIC: 0.90},
    {"step": 20, METRIC: 0.85},  # dips below again: the *first* crossing counts
    {"step": 50, METRIC: 0.99},
]


def brute_force(records, metric, threshold):
    for r in sorted(records, key=lambda r: r["step"]):
        if metric in r and r[metric] >= threshold:
            return r["step"]
    return None


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.06, 0.4, 0.9, 0.95, 0.99, 1.0])
def test_iterations_to_threshold_matches_a_scan(threshold):
    assert iterations_to_threshold(RECORDS, METRIC, threshold) == brute_force(
        RECORDS, METRIC, threshold
    )


def test_threshold_is_inclusive_and_none_when_never_reached():
    assert iterations_to_threshold(RECORDS, METRIC, 0.9) == 10
    assert iterations_to_threshold(RECORDS, METRIC, 0.991) is None


def test_curve_skips_lines_without_the_metric_and_sorts_steps():
    curve = accuracy_curve(list(reversed(RECORDS)), METRIC, name="reFT")
    assert curve.steps == (0, 1, 5, 10, 20, 50)
    assert curve.values == (0.05, 0.05, 0.40, 0.90, 0.85, 0.99)
    assert curve.name == "reFT"


def test_a_step_logged_twice_keeps_the_later_record():
    curve = accuracy_curve([{"step": 3, METRIC: 0.1}, {"step": 3, METRIC: 0.7}], METRIC)
    assert curve.steps == (3,) and curve.values == (0.7,)


def test_unknown_metric_names_the_metrics_present():
    with pytest.raises(ValueError, match="acc/O_FT/cte0"):
        accuracy_curve(RECORDS, "acc/nope")


def test_curve_validates_its_steps():
    with pytest.raises(ValueError, match="strictly increasing"):
        ReftCurve("x", METRIC, (0, 5, 5), (0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="3 steps, 2 values"):
        ReftCurve("x", METRIC, (0, 1, 2), (0.1, 0.2))


def test_curves_to_threshold_needs_distinct_names():
    a = accuracy_curve(RECORDS, METRIC, "a")
    b = ReftCurve("b", METRIC, (0, 100), (0.0, 0.95))
    assert curves_to_threshold([a, b], 0.9) == {"a": 10, "b": 100}
    with pytest.raises(ValueError, match="distinct"):
        curves_to_threshold([a, a], 0.9)


def test_read_metrics_from_a_run_directory(tmp_path):
    lines = [json.dumps(r) for r in RECORDS]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 60, "acc/O_P')
    records = read_metrics(tmp_path)  # the torn last line of a killed run is dropped
    assert records == RECORDS
    assert read_metrics(tmp_path / "metrics.jsonl") == RECORDS


def test_read_metrics_refuses_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{broken\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": "zero"}\n')
    with pytest.raises(ValueError, match="integer 'step'"):
        read_metrics(tmp_path)


def test_plot_draws_every_curve(tmp_path):
    curves = [
        accuracy_curve(RECORDS, METRIC, "reFT"),
        ReftCurve("Scr.+FT", METRIC, (0, 10, 100), (0.0, 0.2, 0.95)),
    ]
    path = plot_reft_curves(curves, tmp_path / "sub" / "curves.png", threshold=0.9)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image[..., :3].std() > 0.05  # not blank
    with pytest.raises(ValueError, match="no curves"):
        plot_reft_curves([], tmp_path / "empty.png")
