"""The shipped Prometheus rules pass ``promtool check rules`` and their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from deploy.prometheus.generate import HERE as RULES_DIR

from .alert_cases import CASES, Case
from .prometheus_instance import prometheus_binary

ALERTS = RULES_DIR / "alerts.yml"
RECORDINGS = RULES_DIR / "rules.yml"


def _annotations() -> dict[str, dict[str, str]]:
    """Return each shipped alert's annotations by alert name."""
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {r["alert"]: r["annotations"] for g in document["groups"] for r in g["rules"]}


def _test_group(case: Case, annotations: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Return one promtool test group for ``case``."""
    expected: list[dict[str, Any]] = []
    if case.labels is not None:
        static = annotations[case.alert]
        expected.append(
            {
                "exp_labels": case.labels,
                "exp_annotations": {**static, "description": case.description},
            }
        )
    return {
        "name": f"{case.alert} {case.kind}",
        "interval": "15s",
        "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
        "alert_rule_test": [
            {"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": expected}
        ],
    }


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool and return its completed process (output captured)."""
    return subprocess.run(
        [prometheus_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_promtool_check_rules_accepts_the_shipped_files() -> None:
    """`promtool check rules` accepts alerts.yml and rules.yml."""
    result = _promtool("check", "rules", str(ALERTS), str(RECORDINGS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_a_quiet_and_a_gap_case() -> None:
    """Each shipped alert has the three kinds of case (the Watchdog cannot be quiet)."""
    kinds: dict[str, set[str]] = {}
    for case in CASES:
        kinds.setdefault(case.alert, set()).add(case.kind)
    assert set(kinds) == set(_annotations())
    for alert, found in kinds.items():
        wanted = {"fires", "gap"} if alert == "Watchdog" else {"fires", "quiet", "gap"}
        assert found == wanted, alert


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    """Every case passes ``promtool test rules`` against the shipped alerts.yml."""
    annotations = _annotations()
    document = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "15s",
        "tests": [_test_group(case, annotations) for case in CASES],
    }
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    result = _promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_accepts_the_scrape_examples() -> None:
    """The static and the hashmod-sharded /probe scrape examples are valid Prometheus config."""
    result = _promtool("check", "config", str(RULES_DIR / "scrape-examples.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_accepts_the_compose_config(tmp_path: Path) -> None:
    """The compose Prometheus config is valid with its rule files where compose mounts them."""
    config = yaml.safe_load((RULES_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    # Inside the container the rules live under /etc/prometheus; here, beside the copy.
    config["rule_files"] = [str(RULES_DIR / Path(p).name) for p in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = _promtool("check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_annotations())} rules found" in result.stdout
