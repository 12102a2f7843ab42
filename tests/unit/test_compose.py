"""The compose example and the Prometheus scrape examples agree with each other and the repo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .monitoring_assets import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SERVICES = (
    "timescaledb",
    "timescaledb-standby",
    "redis",
    "kafka",
    "ingest-exporter",
    "prometheus",
    "alertmanager",
    "grafana",
)


def _yaml(path: Path) -> Any:
    """Return a parsed YAML file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _services() -> dict[str, dict[str, Any]]:
    """Return the compose file's services."""
    services: dict[str, dict[str, Any]] = _yaml(COMPOSE)["services"]
    return services


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Return a service's bind mounts: container path -> host path."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = (COMPOSE.parent / source).resolve()
    return found


def _published(service: dict[str, Any]) -> set[int]:
    """Return the container ports a service publishes."""
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def test_compose_has_the_whole_stack() -> None:
    """The compose file parses and runs every part of the stack."""
    assert set(_services()) == set(SERVICES)


def test_every_mounted_file_exists() -> None:
    """Each bind mount's source exists in the repository (the build context too)."""
    services = _services()
    for name, service in services.items():
        for target, source in _mounts(service).items():
            assert source.exists(), (name, target, source)
    context = services["ingest-exporter"]["build"]
    assert (COMPOSE.parent / context["context"] / context["dockerfile"]).is_file()


def test_prometheus_scrapes_the_compose_services_on_their_ports() -> None:
    """Scrape and Alertmanager targets name compose services and the ports they serve."""
    services = _services()
    prometheus = services["prometheus"]
    config_path = _mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    config = _yaml(config_path)
    targets = [
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    targets += [
        t
        for am in config["alerting"]["alertmanagers"]
        for s in am["static_configs"]
        for t in s["targets"]
    ]
    for target in targets:
        host, port = target.rsplit(":", 1)
        assert host in services, target
        assert int(port) in _published(services[host]), target
    exporter = services["ingest-exporter"]
    assert exporter["command"][-1] == ":9817"
    # The job name is the shipped rules' default selector.
    assert [job["job_name"] for job in config["scrape_configs"]] == ["ingest-exporter"]


def test_prometheus_loads_the_shipped_rule_files() -> None:
    """Every rule file Prometheus reads is mounted from deploy/prometheus."""
    mounts = _mounts(_services()["prometheus"])
    config = _yaml(mounts["/etc/prometheus/prometheus.yml"])
    assert [mounts[path].name for path in config["rule_files"]] == ["alerts.yml", "rules.yml"]


def test_grafana_reads_the_repository_dashboards_and_the_compose_prometheus() -> None:
    """Grafana loads the mounted repository dashboards and queries the compose Prometheus."""
    services = _services()
    mounts = _mounts(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    provider = _yaml(provisioning / "dashboards" / "ingest-exporter.yml")["providers"][0]
    assert mounts[provider["options"]["path"]] == REPO / "grafana" / "dashboards"
    source = _yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in services
    assert int(port) in _published(services[host])


def test_the_probe_example_shards_deployments_over_exporter_replicas() -> None:
    """The multi-target job probes /probe?target= and spreads targets with hashmod."""
    jobs = {
        j["job_name"]: j
        for j in _yaml(DEPLOY / "prometheus" / "scrape-examples.yml")["scrape_configs"]
    }
    assert jobs["ingest-exporter"]["static_configs"][0]["targets"]
    probe = jobs["ingest-exporter-probe"]
    assert probe["metrics_path"] == "/probe"
    rules = probe["relabel_configs"]
    assert rules[0] == {"source_labels": ["__address__"], "target_label": "__param_target"}
    hashmod = [r for r in rules if r.get("action") == "hashmod"]
    assert len(hashmod) == 1
    shards = [r for r in rules if r.get("target_label") == "__address__"]
    assert [r["regex"] for r in shards] == [str(n) for n in range(hashmod[0]["modulus"])]
