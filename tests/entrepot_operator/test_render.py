"""Render is pure: each builder checked without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from entrepot.config import READ_SECRETS, Settings, SumdbSettings
from entrepot.sumdb.note import generate_key
from entrepot_operator.api import ModuleMirrorSpec
from entrepot_operator.kinds import MODULE_MIRROR
from entrepot_operator.render import Owner
from entrepot_operator.render.configmap import go_sections, render_configmap
from entrepot_operator.render.optional import target_labels
from entrepot_operator.render.service import service_url

OWNER = Owner(name="gomods", namespace="builds", uid="1234-uid")


def spec(**extra: Any) -> ModuleMirrorSpec:
    return ModuleMirrorSpec.model_validate(
        {"go": {"proxy": "https://proxy.example.com,direct"}, **extra}
    )


def children(s: ModuleMirrorSpec, *, monitor: bool = False) -> dict[str, Any]:
    return MODULE_MIRROR.render(
        s, OWNER, image="registry.example.com/entrepot:1", service_monitor_available=monitor
    )


def configmap_of(s: ModuleMirrorSpec) -> tuple[dict[str, Any], str]:
    return render_configmap(s, OWNER, go_sections(s, OWNER))


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_every_child_is_owned_labelled_and_namespaced(policy: str) -> None:
    """Owned, so garbage collected with the mirror; but the cache claim only with
    storage.deletionPolicy Delete (Retain, the default, leaves it for a mirror of that name)."""
    for kind, child in children(spec(storage={"deletionPolicy": policy})).items():
        if child is None:
            continue
        meta = child["metadata"]
        assert meta["namespace"] == "builds", kind
        if kind == "PersistentVolumeClaim":
            assert meta["annotations"] == {
                "entrepot.dev/mirror": "builds/gomods",
                "entrepot.dev/mirror-kind": "ModuleMirror",
            }
            if policy == "Retain":
                assert "ownerReferences" not in meta
                continue
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "entrepot.dev/v1alpha1",
                "kind": "ModuleMirror",
                "name": "gomods",
                "uid": "1234-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "entrepot-operator"
        assert meta["labels"]["app.kubernetes.io/instance"] == "gomods"


def test_defaults_give_configmap_pvc_deployment_service_only() -> None:
    present = {k for k, v in children(spec()).items() if v is not None}
    assert present == {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}


def test_the_config_file_is_what_the_server_reads() -> None:
    s = spec(
        go={
            "proxy": "https://proxy.example.com|direct",
            "routes": [{"patterns": "git.example.com", "proxy": "direct"}],
            "cache": {"listTtl": "2m"},
        },
        credentials={"netrc": {"secretName": "netrc", "key": "netrc"}},
    )
    configmap, _ = configmap_of(s)
    parsed = Settings.model_validate(yaml.safe_load(configmap["data"]["config.yaml"]))
    assert parsed.listen == "0.0.0.0:8080"
    assert parsed.go.proxy == "https://proxy.example.com|direct"
    assert parsed.go.routes is not None
    assert parsed.go.routes[0].proxy == "direct"
    assert parsed.go.cache.list_ttl == 120
    assert str(parsed.go.credentials.netrc_file) == "/etc/entrepot/secrets/netrc"


def test_limits_and_timeouts_reach_the_config_file_with_the_servers_defaults() -> None:
    default = Settings.model_validate(
        yaml.safe_load(configmap_of(spec())[0]["data"]["config.yaml"])
    )
    assert default.limits == Settings().limits
    assert default.go.zip_deadline == Settings().go.zip_deadline
    assert default.go.direct.queue == Settings().go.direct.queue
    assert default.go.cache.error_ttl == Settings().go.cache.error_ttl
    s = spec(
        go={
            "proxy": "https://proxy.example.com",
            "routes": [{"patterns": "git.example.com/*, corp.example.com", "deny": "private"}],
            "zipDeadline": "2m",
            "minTransferRate": 4096,
            "minRateWindow": "10s",
            "direct": {"queue": 3, "queueTimeout": "5s"},
        },
        limits={"headerTimeout": "3s", "maxConnections": 100, "minFreeBytes": 0},
    )
    parsed = Settings.model_validate(yaml.safe_load(configmap_of(s)[0]["data"]["config.yaml"]))
    assert parsed.go.zip_deadline == 120
    assert (parsed.go.min_transfer_rate, parsed.go.min_rate_window) == (4096, 10)
    assert (parsed.go.direct.queue, parsed.go.direct.queue_timeout) == (3, 5)
    assert (parsed.limits.header_timeout, parsed.limits.max_connections) == (3, 100)
    assert parsed.limits.min_free_bytes == 0
    assert parsed.go.routes is not None
    assert parsed.go.routes[0].patterns == "git.example.com/*,corp.example.com"  # no blanks


def test_a_config_change_changes_the_pod_template_hash() -> None:
    a = children(spec())["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    b = children(spec(go={"proxy": "https://other.example.com"}))["Deployment"]["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert a["entrepot.dev/config-hash"] != b["entrepot.dev/config-hash"]
    same = children(spec())["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert a == same  # rendering is deterministic


def test_deployment_runs_the_server_safely() -> None:
    d = children(spec())["Deployment"]
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["serve", "--config", "/etc/entrepot/config.yaml"]
    assert container["image"] == "registry.example.com/entrepot:1"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert d["spec"]["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce cache
    assert pod["automountServiceAccountToken"] is False
    assert "imagePullSecrets" not in pod
    pulled = children(spec(imagePullSecrets=["regcred"]))["Deployment"]["spec"]["template"]
    assert pulled["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    claim = next(v for v in pod["volumes"] if v["name"] == "cache")
    assert claim["persistentVolumeClaim"]["claimName"] == "gomods-cache"
    assert (
        d["spec"]["selector"]["matchLabels"].items()
        <= d["spec"]["template"]["metadata"]["labels"].items()
    )


def test_credentials_are_mounted_by_reference_only() -> None:
    s = spec(
        credentials={
            "gitCredentials": {"secretName": "git", "key": "creds"},
            "bearerTokens": [{"host": "proxy.example.com", "secretName": "tok", "key": "t"}],
        }
    )
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    projected = next(v for v in pod["volumes"] if v["name"] == "credentials")["projected"]
    assert [src["secret"]["name"] for src in projected["sources"]] == ["git", "tok"]
    assert projected["sources"][1]["secret"]["items"] == [{"key": "t", "path": "token-0"}]


def test_replicas_get_a_disruption_budget_and_a_rolling_update() -> None:
    out = children(
        spec(replicas=3, storage={"accessMode": "ReadWriteMany"}, stats={"enabled": False})
    )
    assert out["PodDisruptionBudget"] is not None
    assert out["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert out["Deployment"]["spec"]["strategy"] == {"type": "RollingUpdate"}
    assert out["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]


def test_empty_dir_means_no_claim() -> None:
    out = children(spec(storage={"emptyDir": {"sizeLimit": "1Gi"}}))
    assert out["PersistentVolumeClaim"] is None
    cache = next(
        v for v in out["Deployment"]["spec"]["template"]["spec"]["volumes"] if v["name"] == "cache"
    )
    assert cache == {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}


@pytest.mark.parametrize("available", [True, False])
def test_monitoring_uses_a_service_monitor_only_when_its_crd_exists(available: bool) -> None:
    out = children(spec(), monitor=available)
    annotations = out["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert (out["ServiceMonitor"] is not None) is available
    assert ("prometheus.io/scrape" in annotations) is not available


def test_ingress_and_service_url() -> None:
    s = spec(ingress={"host": "goproxy.example.com", "tlsSecretName": "tls"}, service={"port": 80})
    ingress = children(s)["Ingress"]
    assert ingress["spec"]["rules"][0]["host"] == "goproxy.example.com"
    assert ingress["spec"]["tls"][0]["secretName"] == "tls"
    assert service_url(s, OWNER) == "http://gomods.builds.svc:80"


# --- go.sumdb ------------------------------------------------------------------------------

CORP_KEY = generate_key("sum.corp.example.com")[1]


def config_of(s: ModuleMirrorSpec) -> tuple[dict[str, Any], Settings]:
    """The rendered config file, raw and as the server reads it."""
    raw = yaml.safe_load(configmap_of(s)[0]["data"]["config.yaml"])
    # As the server validates it, but here, where the mounted Secrets' files do not exist.
    return raw, Settings.model_validate(raw, context={READ_SECRETS: False})


def test_an_absent_sumdb_renders_nothing_so_the_server_asks_its_go_environment() -> None:
    raw, parsed = config_of(spec())
    assert raw["go"]["sumdb"] == {"latest_ttl": "1m", "unreachable": "refuse"}  # the defaults
    assert parsed.go.sumdb == SumdbSettings()
    assert parsed.go.sumdb.databases is None  # from GOSUMDB / `go env GOSUMDB` in the pod
    assert parsed.go.sumdb.no_sum is None  # from GONOSUMDB / GOPRIVATE
    assert "credentials" not in {v["name"] for v in pod_of(spec())["volumes"]}
    # An empty list is not "unset": it turns verification off.
    off, _ = config_of(spec(go={"proxy": "https://proxy.example.com", "sumdb": {"databases": []}}))
    assert off["go"]["sumdb"]["databases"] == []


def pod_of(s: ModuleMirrorSpec) -> dict[str, Any]:
    pod: dict[str, Any] = children(s)["Deployment"]["spec"]["template"]["spec"]
    return pod


def test_an_inline_key_is_written_into_the_config_file() -> None:
    s = spec(
        go={
            "proxy": "https://proxy.example.com",
            "routes": [{"patterns": "vendor.example.com", "proxy": "direct", "sumdb": False}],
            "sumdb": {
                "databases": [
                    {
                        "name": "sum.corp.example.com",
                        "key": CORP_KEY,
                        "url": "https://sum.corp.example.com/db",
                        "proxy": "direct",
                        "patterns": "corp.example.com, *.corp.example.com",
                    }
                ],
                "noSum": "git.corp.example.com",
                "unreachable": "serve_unverified",
                "latestTtl": "30s",
            },
        }
    )
    raw, parsed = config_of(s)
    assert raw["go"]["sumdb"]["databases"] == [
        {
            "name": "sum.corp.example.com",
            "key": CORP_KEY,
            "url": "https://sum.corp.example.com/db",
            "proxy": "direct",
            "patterns": "corp.example.com,*.corp.example.com",
        }
    ]
    sumdb = parsed.go.sumdb
    assert (sumdb.no_sum, sumdb.unreachable, sumdb.latest_ttl) == (
        "git.corp.example.com",
        "serve_unverified",
        30,
    )
    assert parsed.go.routes is not None
    assert parsed.go.routes[0].sumdb is False
    assert "credentials" not in {v["name"] for v in pod_of(s)["volumes"]}  # nothing to mount


def two_databases(secret_name: str = "team-sumdb") -> ModuleMirrorSpec:
    return spec(
        go={
            "proxy": "https://proxy.example.com",
            "sumdb": {
                "databases": [
                    {
                        "name": "sum.corp.example.com",
                        "key": CORP_KEY,
                        "patterns": "corp.example.com",
                    },
                    {
                        "name": "sum.team.example.com",
                        "keySecret": {"secretName": secret_name, "key": "vkey"},
                    },
                ]
            },
        },
        credentials={
            "bearerTokens": [{"host": "proxy.example.com", "secretName": "tok", "key": "t"}]
        },
    )


def test_a_key_from_a_secret_is_mounted_read_only_and_named_by_key_file() -> None:
    s = two_databases()
    raw, parsed = config_of(s)
    assert parsed.go.sumdb.databases is not None
    first, second = parsed.go.sumdb.databases
    assert (first.key, first.key_file) == (CORP_KEY, None)
    assert second.key is None
    assert str(second.key_file) == "/etc/entrepot/secrets/sumdb-key-1"
    assert "key_secret" not in raw["go"]["sumdb"]["databases"][1]
    pod = pod_of(s)
    projected = next(v for v in pod["volumes"] if v["name"] == "credentials")["projected"]
    assert projected["defaultMode"] == 0o400
    assert [src["secret"]["name"] for src in projected["sources"]] == ["tok", "team-sumdb"]
    assert projected["sources"][1]["secret"]["items"] == [{"key": "vkey", "path": "sumdb-key-1"}]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "credentials", "mountPath": "/etc/entrepot/secrets", "readOnly": True} in mounts
    # Another Secret leaves the config file as it is, and changes the pod template: pods roll.
    moved = two_databases("team-sumdb-2")
    assert configmap_of(moved)[1] == configmap_of(s)[1]
    assert pod_of(moved)["volumes"] != pod["volumes"]


def test_statistics_settings_and_the_database_password_secret() -> None:
    s = spec(
        stats={
            "database": "postgresql://entrepot@db.example.com:5432/entrepot",
            "passwordSecret": {"secretName": "stats-db", "key": "password"},
            "flushInterval": "10s",
        }
    )
    _, parsed = config_of(s)
    assert parsed.stats.enabled is True
    assert parsed.stats.database == "postgresql://entrepot@db.example.com:5432/entrepot"
    assert str(parsed.stats.database_password_file) == "/etc/entrepot/secrets/stats-password"
    assert parsed.stats.flush_interval == 10.0
    projected = next(v for v in pod_of(s)["volumes"] if v["name"] == "credentials")["projected"]
    assert {
        "secret": {"name": "stats-db", "items": [{"key": "password", "path": "stats-password"}]}
    } in projected["sources"]
    # Defaults: counted into the SQLite file of the cache volume; nothing mounted for it.
    _, parsed = config_of(spec())
    assert (parsed.stats.enabled, parsed.stats.database) == (True, None)
    assert parsed.stats.database_password_file is None
    assert "credentials" not in {v["name"] for v in pod_of(spec())["volumes"]}
    _, parsed = config_of(spec(stats={"enabled": False}))
    assert parsed.stats.enabled is False


def test_the_service_monitor_labels_series_as_the_alerts_select_them() -> None:
    monitor = children(spec(), monitor=True)["ServiceMonitor"]
    assert monitor["spec"]["targetLabels"] == [
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/component",
    ]
    service = children(spec())["Service"]
    for name in monitor["spec"]["targetLabels"]:
        assert name in service["metadata"]["labels"], name
    assert target_labels(OWNER) == {
        "app_kubernetes_io_part_of": "entrepot",
        "app_kubernetes_io_component": "module-mirror",
    }


def test_mirror_pods_are_never_best_effort() -> None:
    container = pod_of(spec())["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    mine = {"requests": {"memory": "2Gi"}}
    assert pod_of(spec(resources=mine))["containers"][0]["resources"] == mine  # whole, not merged
