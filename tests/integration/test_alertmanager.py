"""The shipped Alertmanager example: amtool accepts it, routes as documented, and inhibits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.waiting import wait_for

from .alertmanager_instance import (
    AlertmanagerInstance,
    alertmanager_binary,
    running_alertmanager,
    with_receiver,
)
from .conftest import REPO

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
_SUBJECT = {"job": "ingest-exporter", "instance": "exp:9817", "deployment": "prod"}


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run amtool and return its completed process (output captured)."""
    return subprocess.run(
        [alertmanager_binary("amtool"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_amtool_check_config_accepts_the_example() -> None:
    """`amtool check-config` accepts deploy/alertmanager/alertmanager.yml."""
    result = _amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=Watchdog", "severity=info"], "heartbeat"),
        (["alertname=IngestConnectorDown", "severity=critical", "deployment=prod"], "ingest-pager"),
        (
            ["alertname=IngestExporterDown", "severity=critical", "job=ingest-exporter"],
            "ingest-pager",
        ),
        (["alertname=IngestCheckDown", "severity=warning"], "ingest-tickets"),
        (["alertname=IngestTimescaleRoleChanged", "severity=info"], "ingest-info"),
        (["alertname=SomethingElse"], "ingest-tickets"),
    ],
)
def test_amtool_routes_each_severity_to_its_receiver(labels: list[str], receiver: str) -> None:
    """`amtool config routes test` resolves each kind of alert to the documented receiver."""
    result = _amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def _alert(name: str, severity: str, **labels: str) -> dict[str, object]:
    """Return an alert as Prometheus posts it."""
    return {"labels": {"alertname": name, "severity": severity, **labels}, "annotations": {}}


async def _inhibited(am: AlertmanagerInstance) -> dict[str, bool]:
    """Return, per alert name, whether Alertmanager holds it as inhibited."""
    return {a["labels"]["alertname"]: bool(a["status"]["inhibitedBy"]) for a in await am.alerts()}


async def test_exporter_down_inhibits_its_dependent_alerts_only(tmp_path: Path) -> None:
    """A real Alertmanager mutes a down exporter's other alerts, not another instance's."""
    config = with_receiver(CONFIG, "http://127.0.0.1:9", timing={"group_wait": "1s"})
    async with running_alertmanager(tmp_path, config) as am:
        other = {**_SUBJECT, "instance": "exp-2:9817"}
        await am.post_alerts(
            [
                _alert(
                    "IngestExporterDown", "critical", job="ingest-exporter", instance="exp:9817"
                ),
                _alert("IngestConnectorDown", "critical", connector="redis", **_SUBJECT),
                _alert("IngestRedisReplicaLinkDown", "warning", **other),
            ]
        )

        async def inhibited() -> dict[str, bool] | None:
            seen = await _inhibited(am)
            return seen if seen.get("IngestConnectorDown") else None

        seen = await wait_for(inhibited, timeout=15)
        assert seen == {
            "IngestExporterDown": False,
            "IngestConnectorDown": True,
            "IngestRedisReplicaLinkDown": False,
        }
