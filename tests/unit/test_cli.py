"""The CLI contract: JSON keys other tools parse, seed values, and one-line errors with exit 2."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from modelrollout.cli import build_parser, main

pytestmark = pytest.mark.unit


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main([*argv, "--output", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_plan_seed_value_and_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        capsys,
        "plan",
        "--metric",
        "proportion",
        "--baseline",
        "0.15",
        "--mde",
        "0.10",
        "--mde-type",
        "relative",
        "--alpha",
        "0.05",
        "--power",
        "0.8",
        "--daily-traffic",
        "18514",
    )
    assert out["sample_size_per_variant"] == 9257
    assert out["total_sample_size"] == 2 * 9257
    # all traffic in the experiment, 18,514 units a day: exactly one day
    assert out["expected_days"] == pytest.approx(1.0)


def test_plan_without_traffic_has_no_expected_days(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(capsys, "plan", "--baseline", "0.12", "--mde", "0.02", "--mde-type", "absolute")
    assert out["sample_size_per_variant"] == 4438
    assert "expected_days" not in out


def test_plan_k_challengers_uses_bonferroni(capsys: pytest.CaptureFixture[str]) -> None:
    one = run_json(capsys, "plan", "--baseline", "0.15", "--mde", "0.10")
    three = run_json(capsys, "plan", "--baseline", "0.15", "--mde", "0.10", "--challengers", "3")
    assert three["alpha_adjusted"] == pytest.approx(0.05 / 3)
    assert three["sample_size_per_variant"] > one["sample_size_per_variant"]
    assert three["total_sample_size"] == three["sample_size_per_variant"] + 3 * three["sample_size_treatment"]


def test_plan_mean_metric(capsys: pytest.CaptureFixture[str]) -> None:
    from statsmodels.stats.power import TTestIndPower

    out = run_json(
        capsys,
        "plan",
        "--metric",
        "mean",
        "--baseline-mean",
        "10",
        "--baseline-sd",
        "4",
        "--mde",
        "0.5",
        "--mde-type",
        "absolute",
    )
    oracle = TTestIndPower().solve_power(effect_size=0.5 / 4, alpha=0.05, power=0.8, ratio=1.0)
    assert out["sample_size_per_variant"] == int(-(-oracle // 1))


def test_plan_mean_metric_where_scipy_nct_cdf_is_nan(capsys: pytest.CaptureFixture[str]) -> None:
    # This plan used to exit 1 with a traceback: scipy >= 1.15 returns NaN from nct.cdf in the
    # lower tail Brent's method passes through. statsmodels' TTestIndPower gives 315.75.
    from statsmodels.stats.power import TTestIndPower

    argv = ["plan", "--metric", "mean", "--baseline-mean", "10", "--baseline-sd", "1", "--mde", "0.030781"]
    out = run_json(capsys, *argv, "--alpha", "0.01", "--power", "0.9")
    oracle = float(TTestIndPower().solve_power(effect_size=0.30781, alpha=0.01, power=0.9, ratio=1.0))
    assert oracle == pytest.approx(315.75, abs=0.01)
    assert out["sample_size_per_variant"] == math.ceil(oracle - 1e-9) == 316
    assert out["total_sample_size"] == 2 * 316


@pytest.mark.parametrize(
    ("test", "p_value"),
    [("z", 0.108), ("chi2-yates", 0.120), ("chi2", 0.108)],
)
def test_analyze_seed_values(capsys: pytest.CaptureFixture[str], test: str, p_value: float) -> None:
    out = run_json(
        capsys,
        "analyze",
        "--metric",
        "proportion",
        "--control",
        "180/1800",
        "--treatment",
        "210/1800",
        "--test",
        test,
    )
    assert out["p_value"] == pytest.approx(p_value, abs=5e-4)
    assert out["significant"] is False
    assert out["decision"] == "INCONCLUSIVE"
    for key in ("difference", "ci", "relative_lift", "relative_lift_ci"):
        assert key in out
    assert out["ci"][0] < out["difference"] < out["ci"][1]
    assert out["difference"] == pytest.approx(210 / 1800 - 180 / 1800)


def test_analyze_significant_better_and_worse(capsys: pytest.CaptureFixture[str]) -> None:
    better = run_json(capsys, "analyze", "--control", "1500/10000", "--treatment", "1700/10000")
    assert better["decision"] == "ROLLOUT_CHALLENGER"
    worse = run_json(capsys, "analyze", "--control", "1700/10000", "--treatment", "1500/10000")
    assert worse["decision"] == "KEEP_CHAMPION"
    # lower is better: the same data means the challenger wins
    lower = run_json(
        capsys, "analyze", "--control", "1700/10000", "--treatment", "1500/10000", "--direction", "decrease"
    )
    assert lower["decision"] == "ROLLOUT_CHALLENGER"


def test_analyze_practical_threshold_blocks_small_lifts(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        capsys,
        "analyze",
        "--control",
        "15000/100000",
        "--treatment",
        "15600/100000",
        "--practical-threshold",
        "0.05",
    )
    assert out["significant"] is True  # p well below 0.05 ...
    assert out["relative_lift_ci"][0] < 0.05  # ... but the lift may be under 5 %
    assert out["decision"] == "INCONCLUSIVE"


def test_analyze_sequential_is_wider_than_fixed(capsys: pytest.CaptureFixture[str]) -> None:
    fixed = run_json(capsys, "analyze", "--control", "180/1800", "--treatment", "210/1800")
    seq = run_json(
        capsys, "analyze", "--control", "180/1800", "--treatment", "210/1800", "--test", "sequential"
    )
    assert seq["e_value"] is not None
    assert seq["p_value"] > fixed["p_value"]
    assert seq["ci"][0] < fixed["ci"][0]
    assert seq["ci"][1] > fixed["ci"][1]


def test_analyze_bayesian_reports_probability_better(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        capsys, "analyze", "--control", "180/1800", "--treatment", "210/1800", "--test", "bayesian"
    )
    assert 0.9 < out["probability_better"] < 0.96
    assert out["decision"] == "INCONCLUSIVE"


def test_analyze_mean_welch_matches_scipy(capsys: pytest.CaptureFixture[str]) -> None:
    from scipy.stats import ttest_ind_from_stats

    out = run_json(
        capsys,
        "analyze",
        "--metric",
        "mean",
        "--control",
        "500,10,3",
        "--treatment",
        "400,10.6,3.5",
        "--test",
        "welch",
    )
    oracle = ttest_ind_from_stats(10.6, 3.5, 400, 10, 3, 500, equal_var=False)
    assert out["p_value"] == pytest.approx(oracle.pvalue, rel=1e-9)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["analyze", "--control", "180/100", "--treatment", "210/1800"], "must be <= trials"),
        (["analyze", "--control", "18x/100", "--treatment", "210/1800"], "--control"),
        (["plan", "--mde", "0.1"], "--baseline is required"),
        (["plan", "--baseline", "1.5", "--mde", "0.1"], "baseline"),
        (["plan", "--baseline", "0.1", "--mde", "0.1", "--alpha", "2"], "alpha"),
        (
            ["analyze", "--metric", "mean", "--control", "5,1,1", "--treatment", "5,1,1", "--test", "z"],
            "--test z",
        ),
        (["plan", "--baseline", "0.1", "--mde", "0.1", "--challengers", "0"], "--challengers"),
        (
            [
                "simulate",
                "--baseline",
                "0.1",
                "--lift",
                "0",
                "--mde",
                "0.1",
                "--look-every",
                "0",
                "--max-n-per-variant",
                "100",
            ],
            "look_every",
        ),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself on usage errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err


def _exit_and_stderr(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int | str | None, str]:
    try:
        code: int | str | None = main(argv)
    except SystemExit as exc:  # argparse exits by itself on usage errors
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("metric", "option", "value", "other", "needle"),
    [
        ("proportion", "--control", "-1/100", "5/100", "must be >= 0"),
        ("proportion", "--treatment", "-1/100", "5/100", "must be >= 0"),
        ("proportion", "--control", "-.5/100", "5/100", "must be >= 0"),
        ("mean", "--control", "-5,1,1", "5,1,1", "control n must be >= 2"),
    ],
)
def test_negative_looking_value_gets_the_same_message_with_a_space_or_an_equals_sign(
    capsys: pytest.CaptureFixture[str], metric: str, option: str, value: str, other: str, needle: str
) -> None:
    # argparse took "-1/100" after a space for an option ("expected one argument"); both spellings
    # must reach the check of the value itself.
    rest = "--treatment" if option == "--control" else "--control"
    base = ["analyze", "--metric", metric, rest, other]
    spaced = _exit_and_stderr(capsys, [*base, option, value])
    joined = _exit_and_stderr(capsys, [*base, f"{option}={value}"])
    assert spaced == joined
    code, err = spaced
    assert code == 2
    assert needle in err
    assert "expected one argument" not in err
    assert len(err.strip().splitlines()) == 1, err


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_parsers(sub)
    return found


def test_no_option_looks_like_a_negative_number() -> None:
    # Values starting "-<digit>" or "-.<digit>" are read as values (cli._Parser); an option spelt
    # like that would be shadowed.
    parsers = _all_parsers(build_parser())
    assert len(parsers) > 5
    for parser in parsers:
        for action in parser._actions:
            for option in action.option_strings:
                assert not parser._negative_number_matcher.match(option), (parser.prog, option)


def test_console_script_and_kubectl_plugin_name_run() -> None:
    for script in ("modelrollout", "kubectl-modelrollout"):
        exe = f"{sys.prefix}/bin/{script}"
        done = subprocess.run(
            [exe, "analyze", "--control", "180/1800", "--treatment", "210/1800", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(done.stdout)["decision"] == "INCONCLUSIVE"


def test_simulate_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_json(
        capsys,
        "simulate",
        "--metric",
        "proportion",
        "--baseline",
        "0.15",
        "--lift",
        "0",
        "--mde",
        "0.10",
        "--method",
        "sequential",
        "--look-every",
        "1000",
        "--max-n-per-variant",
        "20000",
        "--runs",
        "200",
        "--seed",
        "7",
    )
    for key in (
        "reject_rate",
        "promote_rate",
        "rollback_rate",
        "median_n_at_decision",
        "planned_n_per_variant",
    ):
        assert key in out
    assert out["planned_n_per_variant"] == 9257
    assert 0.0 <= out["reject_rate"] <= 0.15


def test_run_refuses_no_cluster_scan_without_named_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    # Cluster-wide, kopf must scan namespaces; refused before kopf starts.
    assert main(["run", "--all-namespaces", "--no-cluster-scan"]) == 2
    assert capsys.readouterr().err.strip() == (
        "modelrollout run: error: --no-cluster-scan needs the namespaces named: use --namespace NS")


# --- analyze --segments ---------------------------------------------------------------------------


def _segments_file(tmp_path: Path, doc: object) -> str:
    path = tmp_path / "segments.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _arm(successes: int, trials: int) -> dict[str, int]:
    return {"successes": successes, "trials": trials}


HARMED_MOBILE = {
    "protected": [
        {"name": "eu", "champion": _arm(4100, 90_000), "challenger": _arm(470, 10_000)},
        {"name": "us", "champion": _arm(2700, 45_000), "challenger": _arm(305, 5_000)},
        {"name": "mobile", "champion": _arm(900, 9_000), "challenger": _arm(40, 1_000)},  # 10 % -> 4 %
    ],
    "weights": {"champion": 90, "challenger": 10},
}


def test_analyze_segments_names_the_harmed_segment_as_the_stats_module_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelrollout.stats import segments as sg

    out = run_json(capsys, "analyze", "--segments", _segments_file(tmp_path, HARMED_MOBILE))
    assert out["decision"] == "harmed"
    assert out["harmed"] == ["mobile"]
    assert out["correction"] == "bonferroni"
    assert out["level_per_segment"] == pytest.approx(0.05 / 3)
    assert out["srm"]["mismatched"] == []
    assert out["exploratory"] is None
    # The CLI is a thin layer over segment_harm, each mixture tuned to the segment's counts so far
    direct = sg.segment_harm(
        [
            sg.SegmentCounts(s["name"], s["champion"]["successes"], s["champion"]["trials"],
                             s["challenger"]["successes"], s["challenger"]["trials"],
                             planned_n_per_variant=max(s["champion"]["trials"], s["challenger"]["trials"]))
            for s in HARMED_MOBILE["protected"]
        ],
        higher_is_worse=False,
    )
    assert [s["p_value"] for s in out["segments"]] == [s.p_value for s in direct.segments]
    assert [s["interval"] for s in out["segments"]] == [list(s.interval.as_list()) for s in direct.segments]
    table = main(["analyze", "--segments", _segments_file(tmp_path, HARMED_MOBILE)])
    text = capsys.readouterr().out
    assert table == 0
    assert "mobile" in text
    assert "HARMED" in text
    assert "Decision: harmed (mobile)" in text


def test_analyze_segments_with_e_bh_an_exploratory_view_and_a_per_segment_srm(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    doc = {
        "protected": [
            {"name": "eu", "champion": _arm(4100, 90_000), "challenger": _arm(470, 10_000)},
            {"name": "app", "champion": _arm(470, 9_400), "challenger": _arm(30, 600)},  # 6 % of its trials
        ],
        "exploratory": [
            {"name": f"country-{i:02d}", "champion": _arm(90, 1800 + i), "challenger": _arm(10, 200)}
            for i in range(25)
        ],
        "weights": {"champion": 90, "challenger": 10},
    }
    out = run_json(capsys, "analyze", "--segments", _segments_file(tmp_path, doc), "--correction", "e-bh")
    assert out["correction"] == "e-bh"
    assert out["srm"]["mismatched"] == ["app"]
    assert out["decision"] == "sample ratio mismatch"
    view = out["exploratory"]
    assert view["exploratory"] is True
    assert len(view["segments"]) == 21  # the 20 with the most traffic, then "other"
    assert view["segments"][-1]["name"] == "other"
    assert len(view["folded"]) == 5


def _one_segment(challenger: object) -> str:
    return json.dumps({"protected": [{"name": "eu", "champion": _arm(1, 10), "challenger": challenger}]})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"protected": []}), "protected must be a non-empty list"),
        (
            json.dumps({"protected": [{"name": "eu", "champion": _arm(1, 10)}]}),
            "protected[0].challenger must",
        ),
        (_one_segment({"successes": 1}), "protected[0].challenger needs trials"),
        (_one_segment({"successes": 1, "trials": "x"}), "protected[0].challenger.trials must be a number"),
        (
            json.dumps({"protected": [{"name": "eu", "champion": _arm(5, 3), "challenger": _arm(1, 10)}]}),
            "eu",
        ),
        (json.dumps({"segments": []}), "unknown keys in the segments file: segments"),
        (
            json.dumps({**HARMED_MOBILE, "weights": {"champion": 0, "challenger": 10}}),
            "weights must both be positive",
        ),
    ],
)
def test_analyze_segments_bad_files_are_one_line_with_the_field(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["analyze", "--segments", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_analyze_needs_segments_or_both_arms(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["analyze", "--segments", str(tmp_path / "missing.json")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    assert main(["analyze", "--segments", _segments_file(tmp_path, HARMED_MOBILE), "--control", "1/2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["analyze", "--control", "1/2"]) == 2
    assert "give --control and --treatment" in capsys.readouterr().err


def test_the_readme_segments_example_names_mobile(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "segments.json"
    out = run_json(capsys, "analyze", "--segments", str(example))
    assert out["harmed"] == ["mobile"]
    assert [s["name"] for s in out["exploratory"]["segments"]] == ["de", "fr", "jp"]
