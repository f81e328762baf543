"""Checks the deployment material under deploy/: the Kustomize overlays
render and validate against Kubernetes 1.32's schemas, the rendered objects
keep the invariants a Chorus cluster needs, the node configs are valid
Chorus configs, the Chaos Mesh experiments, the Grafana dashboard and the
alert rules name only what exists.

    .venv/bin/pip install -r tests/deploy/requirements.txt
    .venv/bin/python -m pytest tests/deploy -q

Rendering needs `kubectl` (its built-in kustomize); without it those tests
are skipped and say so. `promtool`, when installed, also checks and unit
tests the alert rules and the dashboard's queries.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import shutil
import subprocess
import tomllib

import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CHAOS = DEPLOY / "chaos-mesh"
MONITORING = DEPLOY / "monitoring"

KUBERNETES_VERSION = "1.32"
NAMESPACE = "chorus"
SITES = ("london", "newyork", "tokyo")
OVERLAYS = {site: K8S / "overlays" / site for site in SITES}
ALL = K8S / "all"

# Every metric a Chorus node exports on /metrics.
METRICS = {
    "chorus_sessions",
    "chorus_parked_sessions",
    "chorus_connections",
    "chorus_logins_total",
    "chorus_login_failures_total",
    "chorus_stanzas_in_total",
    "chorus_stanzas_out_total",
    "chorus_stream_errors_total",
    "chorus_rate_limited_total",
    "chorus_offline_stored_total",
    "chorus_router_queue_full_total",
    "chorus_session_queue_depth",
    "chorus_cluster_peer_up",
    "chorus_cluster_replication_lag_items",
    "chorus_cluster_outbox_stanzas",
    "chorus_cluster_last_heard_ms",
    "chorus_cluster_lease_expiries_total",
    "chorus_cluster_stanzas_queued_total",
    "chorus_cluster_duplicates_dropped_total",
    "chorus_antientropy_rounds_total",
    "chorus_raft_term",
    "chorus_raft_is_leader",
    "chorus_raft_leader_known",
    "chorus_raft_last_log_index",
    "chorus_raft_last_applied_index",
    "chorus_raft_apply_lag",
    "chorus_archive_records_applied",
    "chorus_archive_spool_depth",
    "chorus_archive_shipped_total",
    "chorus_fatal_error",
}
# Metrics Prometheus itself attaches to every target.
SCRAPE_METRICS = {"up"}

# Top-level sections of a Chorus config (chorus-core's Config).
CONFIG_SECTIONS = {
    "server",
    "tls",
    "c2s",
    "http",
    "limits",
    "stream_management",
    "registration",
    "log",
    "cluster",
    "archive",
    "api",
    "muc",
    "telemetry",
}

# Kinds whose schemas kubernetes-validate does not ship (CRDs): checked
# structurally instead, against the fields these files use.
CRD_GROUPS = ("chaos-mesh.org/", "monitoring.coreos.com/")


# --------------------------------------------------------------- helpers


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: cannot render the Kustomize overlays (install kubectl >= 1.32)")
    return path


@functools.lru_cache(maxsize=None)
def _render(directory: str) -> tuple:
    out = subprocess.run(
        [kubectl(), "kustomize", directory],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def render(path: pathlib.Path) -> list[dict]:
    """The objects `kubectl kustomize PATH` renders (cached per path)."""
    return list(_render(str(path)))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels-style selector (or a LabelSelector) matches labels."""
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(sts: dict) -> dict:
    return sts["spec"]["template"]["metadata"]["labels"]


def container(sts: dict) -> dict:
    containers = sts["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def port_number(ctr: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in ctr["ports"] if p["name"] == port)


def node_configs(docs: list[dict]) -> dict[str, dict]:
    """Every node config file in the rendered ConfigMaps, by file name."""
    files = {}
    for cm in of_kind(docs, "ConfigMap"):
        for name, text in cm.get("data", {}).items():
            assert name.endswith(".toml"), f"ConfigMap {cm['metadata']['name']}: unexpected key {name}"
            files[name] = tomllib.loads(text)
    return files


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers followed by a
    selector, a range, an operator or the end, not function calls,
    keywords, label names or label values)."""
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # drop string literals
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # drop label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # drop ranges ([5m], [$__rate_interval])
    stripped = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    keywords = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", stripped):
        word, call = m.group(1), m.group(2)
        if call or word in keywords or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def example_config_keys() -> dict[str, set[str]]:
    """Keys of each section of deploy/chorus.example.toml, including the
    ones it only shows commented out (`# cert_file = ...`)."""
    keys: dict[str, set[str]] = {}
    section = None
    for line in (DEPLOY / "chorus.example.toml").read_text().splitlines():
        m = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if m:
            section = m.group(1)
            keys.setdefault(section, set())
            continue
        m = re.match(r"^#?\s?([a-z_]+) = ", line)
        if m and section:
            keys[section].add(m.group(1))
    return keys


# ------------------------------------------------------ rendering, schema


@pytest.mark.parametrize("path", [*OVERLAYS.values(), ALL], ids=[*SITES, "all"])
def test_renders_and_validates_strictly_against_kubernetes_1_32(path):
    docs = render(path)
    assert docs, f"{path} rendered nothing"
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name}: {name} is not valid Kubernetes {KUBERNETES_VERSION}: {e.message} at {list(e.path)}")


def test_the_validator_is_strict():
    # Guards the test above: an unknown field must be an error.
    doc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "publishNotReadyAdresses": True},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_each_overlay_is_one_site_and_all_is_three():
    for site, path in OVERLAYS.items():
        docs = render(path)
        kinds = sorted(d["kind"] for d in docs)
        assert kinds == sorted(
            [
                "ConfigMap",
                "PodDisruptionBudget",
                "Secret",
                "Service",
                "Service",
                "ServiceAccount",
                "StatefulSet",
            ]
        ), f"{site}: {kinds}"
        for doc in docs:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
            assert doc["metadata"]["labels"]["site"] == site, doc["metadata"]
    docs = render(ALL)
    assert len(of_kind(docs, "Namespace")) == 1
    assert one(docs, "Namespace")["metadata"]["name"] == NAMESPACE
    assert len(of_kind(docs, "StatefulSet")) == 3
    ids = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(ids) == len(set(ids))
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE


# ----------------------------------------------------------- StatefulSet


@pytest.mark.parametrize("site", SITES)
def test_statefulset_identity_storage_and_image(site):
    docs = render(OVERLAYS[site])
    sts = one(docs, "StatefulSet")
    assert sts["metadata"]["name"] == f"chorus-{site}"  # pods chorus-<site>-0, ...
    spec = sts["spec"]
    assert spec["replicas"] == 1
    assert selects(spec["selector"], pod_labels(sts))
    assert pod_labels(sts)["site"] == site
    assert spec["selector"]["matchLabels"]["site"] == site
    claims = spec["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    ctr = container(sts)
    assert ctr["image"] == "chorus:latest"
    assert ctr["imagePullPolicy"] == "IfNotPresent"
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    # SIGTERM drains by itself (see the StatefulSet's comment).
    assert "lifecycle" not in ctr
    # Service links would inject CHORUS_* variables, which Chorus reads as
    # config overrides (CHORUS_<SECTION>__<KEY>); the node's settings are
    # all in its config file.
    assert pod["enableServiceLinks"] is False
    for env in ctr.get("env", []):
        assert not (env["name"].startswith("CHORUS_") and "__" in env["name"]), env


@pytest.mark.parametrize("site", SITES)
def test_every_container_has_resources_probes_and_a_locked_down_context(site):
    sts = one(render(OVERLAYS[site]), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    for ctr in pod["containers"] + pod.get("initContainers", []):
        res = ctr["resources"]
        for kind in ("cpu", "memory"):
            assert kind in res["requests"] and kind in res["limits"], (ctr["name"], res)
        sc = ctr["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"

    ctr = container(sts)
    probes = {kind: ctr[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    for get in probes.values():
        assert get["scheme"] == "HTTPS"
        assert port_number(ctr, get["port"]) == 8080


@pytest.mark.parametrize("site", SITES)
def test_pods_spread_across_zones(site):
    sts = one(render(OVERLAYS[site]), "StatefulSet")
    spreads = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    zone = [s for s in spreads if s["topologyKey"] == "topology.kubernetes.io/zone"]
    assert len(zone) == 1
    assert zone[0]["whenUnsatisfiable"] == "ScheduleAnyway"
    # Spreads the nodes of every site (so two sites' archive voters do not
    # share a zone), hence must not select by site.
    labels = pod_labels(sts)
    for other in SITES:
        assert selects(zone[0]["labelSelector"], {**labels, "site": other})


@pytest.mark.parametrize("site", SITES)
def test_service_account_mounts_no_token(site):
    docs = render(OVERLAYS[site])
    sa = one(docs, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False


# -------------------------------------------------------------- Services


@pytest.mark.parametrize("site", SITES)
def test_headless_cluster_service(site):
    docs = render(OVERLAYS[site])
    sts = one(docs, "StatefulSet")
    headless = [s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1
    svc = headless[0]
    assert svc["metadata"]["name"] == f"chorus-cluster-{site}"
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in svc["spec"]["ports"]] == [7070]
    ctr = container(sts)
    assert port_number(ctr, svc["spec"]["ports"][0]["targetPort"]) == 7070
    assert selects(svc["spec"]["selector"], pod_labels(sts))


@pytest.mark.parametrize("site", SITES)
def test_client_service(site):
    docs = render(OVERLAYS[site])
    sts = one(docs, "StatefulSet")
    clients = [s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") != "None"]
    assert len(clients) == 1
    svc = clients[0]
    assert sorted(p["port"] for p in svc["spec"]["ports"]) == [5222, 5223, 8080]
    ctr = container(sts)
    for p in svc["spec"]["ports"]:
        assert port_number(ctr, p["targetPort"]) == p["port"]
    assert not svc["spec"].get("publishNotReadyAddresses", False)  # readiness gates clients
    assert selects(svc["spec"]["selector"], pod_labels(sts))


def test_services_and_budgets_select_exactly_their_own_site():
    docs = render(ALL)
    stses = of_kind(docs, "StatefulSet")
    for obj in of_kind(docs, "Service") + of_kind(docs, "PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        matched = [s["metadata"]["name"] for s in stses if selects(selector, pod_labels(s))]
        assert matched == [f"chorus-{obj['metadata']['labels']['site']}"], (obj["kind"], obj["metadata"]["name"], matched)


# ------------------------------------------------- PodDisruptionBudget


@pytest.mark.parametrize("site", SITES)
def test_disruption_budget_selects_the_statefulset_and_lets_drains_proceed(site):
    docs = render(OVERLAYS[site])
    sts = one(docs, "StatefulSet")
    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], pod_labels(sts))
    # With one replica, minAvailable: 1 would block every drain.
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["maxUnavailable"] == 1


# ------------------------------------------------------- Secret, volumes


@pytest.mark.parametrize("site", SITES)
def test_certificate_secret_is_mounted_and_carries_no_data(site):
    docs = render(OVERLAYS[site])
    sts = one(docs, "StatefulSet")
    secret = one(docs, "Secret")
    # No keys: `kubectl apply -k` must never overwrite the certificates an
    # operator created with `kubectl create secret`.
    assert not secret.get("data") and not secret.get("stringData")
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(sts)["volumeMounts"]}
    tls = mounts["/etc/chorus/tls"]
    assert tls["readOnly"] is True
    assert volumes[tls["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    config = mounts["/etc/chorus/config"]
    cm = one(docs, "ConfigMap")
    assert volumes[config["name"]]["configMap"]["name"] == cm["metadata"]["name"]


# ------------------------------------------------------- node configs


@pytest.mark.parametrize("site", SITES)
def test_node_configs_parse_and_match_the_pods(site):
    docs = render(OVERLAYS[site])
    sts = one(docs, "StatefulSet")
    configs = node_configs(docs)
    pods = [f"{sts['metadata']['name']}-{i}" for i in range(sts["spec"]["replicas"])]
    # The container reads /etc/chorus/config/$(POD_NAME).toml.
    ctr = container(sts)
    assert ctr["command"] == ["/usr/local/bin/chorus", "--config", "$(CHORUS_CONFIG)", "serve"]
    assert "args" not in ctr
    env = [e["name"] for e in ctr["env"]]
    # $(VAR) only expands variables defined earlier in the list.
    assert env.index("POD_NAME") < env.index("CHORUS_CONFIG")
    env = {e["name"]: e for e in ctr["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["CHORUS_CONFIG"]["value"] == "/etc/chorus/config/$(POD_NAME).toml"
    for pod in pods:
        assert f"{pod}.toml" in configs, f"no config file for pod {pod}"

    mounts = {m["name"]: m["mountPath"] for m in container(sts)["volumeMounts"]}
    known = example_config_keys()
    for name, cfg in configs.items():
        assert set(cfg) <= CONFIG_SECTIONS, f"{name}: unknown sections {set(cfg) - CONFIG_SECTIONS}"
        for section, table in cfg.items():
            unknown = set(table) - known.get(section, set())
            assert not unknown, f"{name}: [{section}] has keys Chorus does not know: {unknown}"
        c = cfg["cluster"]
        assert f"{c['node_id']}.toml" == name
        assert c["site"] == site
        assert re.fullmatch(r"[A-Za-z0-9-]{1,64}", c["node_id"])
        assert c["listen"].rsplit(":", 1)[1] == "7070"
        assert cfg["server"]["data_dir"] == mounts["data"]
        for key in ("ca_file", "cert_file", "key_file"):
            assert c[key].startswith("/etc/chorus/tls/"), (name, key)
        assert c["cert_file"] == f"/etc/chorus/tls/{c['node_id']}.pem"
        assert c["key_file"] == f"/etc/chorus/tls/{c['node_id']}.key"
        assert cfg["tls"]["cert_file"].startswith("/etc/chorus/tls/")
        for peer in c["peers"]:
            assert set(peer) == {"id", "site", "addr"}


def test_peers_name_the_other_sites_by_their_headless_dns_names():
    docs = render(ALL)
    configs = node_configs(docs)
    stses = {s["metadata"]["labels"]["site"]: s for s in of_kind(docs, "StatefulSet")}
    nodes = {cfg["cluster"]["node_id"]: cfg["cluster"]["site"] for cfg in configs.values()}
    assert len(nodes) == len(configs), "node ids are not unique"
    assert set(nodes.values()) == set(SITES)

    for name, cfg in configs.items():
        c = cfg["cluster"]
        peers = {p["id"]: p for p in c["peers"]}
        assert len(peers) == len(c["peers"]), f"{name}: a peer is listed twice"
        # Every other node, and never itself (Chorus refuses repeated ids).
        assert set(peers) == set(nodes) - {c["node_id"]}, name
        # ... which covers both other sites.
        assert set(SITES) - {c["site"]} <= {p["site"] for p in peers.values()}, name
        for pid, peer in peers.items():
            site = peer["site"]
            assert nodes[pid] == site
            headless = stses[site]["spec"]["serviceName"]
            assert peer["addr"] == f"{pid}.{headless}.{NAMESPACE}.svc:7070", (name, peer)
            assert pid.startswith(stses[site]["metadata"]["name"] + "-")


def test_shared_settings_agree_across_nodes():
    configs = node_configs(render(ALL))
    nodes = {cfg["cluster"]["node_id"] for cfg in configs.values()}
    for key in ("domain", "data_dir"):
        assert len({cfg["server"][key] for cfg in configs.values()}) == 1, key
    voters = {tuple(cfg.get("archive", {}).get("voters", [])) for cfg in configs.values()}
    assert len(voters) == 1, f"nodes disagree on archive voters: {voters}"
    (voters,) = voters
    # One voter per site (pod 0), each a real node.
    assert set(voters) <= nodes
    assert sorted(voters) == sorted(f"chorus-{site}-0" for site in SITES)


# ------------------------------------------------------------ Chaos Mesh

CHAOS_KINDS = {
    "PodChaos": {"action", "mode", "value", "selector", "duration", "gracePeriod", "containerNames"},
    "NetworkChaos": {
        "action",
        "mode",
        "value",
        "selector",
        "duration",
        "direction",
        "target",
        "delay",
        "loss",
        "duplicate",
        "corrupt",
        "bandwidth",
        "externalTargets",
    },
    "TimeChaos": {"mode", "value", "selector", "duration", "timeOffset", "clockIds", "containerNames"},
    "Schedule": {"schedule", "concurrencyPolicy", "historyLimit", "startingDeadlineSeconds", "type", "networkChaos", "podChaos", "timeChaos"},
}
SELECTOR_KEYS = {"namespaces", "labelSelectors", "expressionSelectors", "pods"}
ACTIONS = {
    "PodChaos": {"pod-kill", "pod-failure", "container-kill"},
    "NetworkChaos": {"netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"},
}
MODES = {"one", "all", "fixed", "fixed-percent", "random-max-percent"}
DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def chaos_docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(CHAOS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def check_selector(where: str, sel: dict):
    assert set(sel) <= SELECTOR_KEYS, f"{where}: unknown selector keys {set(sel) - SELECTOR_KEYS}"
    assert sel["namespaces"] == [NAMESPACE], where
    labels = sel.get("labelSelectors", {})
    # Select Chorus pods by the labels the overlays really put on them.
    assert labels.get("app.kubernetes.io/name") == "chorus", where
    if "site" in labels:
        assert labels["site"] in SITES, where
    for expr in sel.get("expressionSelectors", []):
        assert expr["key"] == "site" and expr["operator"] in {"In", "NotIn"}, where
        assert set(expr["values"]) <= set(SITES), where


def check_chaos_spec(where: str, kind: str, spec: dict):
    assert set(spec) <= CHAOS_KINDS[kind], f"{where}: fields {set(spec) - CHAOS_KINDS[kind]} are not used by {kind}"
    if kind in ACTIONS:
        assert spec["action"] in ACTIONS[kind], where
    assert spec["mode"] in MODES, where
    check_selector(where, spec["selector"])
    if "duration" in spec:
        assert DURATION.match(spec["duration"]), (where, spec["duration"])
    if kind == "PodChaos" and spec["action"] == "pod-failure":
        assert "duration" in spec, f"{where}: pod-failure without duration never ends"
    if kind == "PodChaos" and spec["action"] == "container-kill":
        assert spec["containerNames"] == ["chorus"], where
    if kind == "NetworkChaos":
        assert "duration" in spec, f"{where}: a network fault should heal by itself"
        direction = spec.get("direction", "to")
        assert direction in {"to", "from", "both"}, where
        if direction != "to":
            assert "target" in spec, f"{where}: direction {direction} needs a target"
        if "target" in spec:
            assert spec["target"]["mode"] in MODES
            check_selector(where + " target", spec["target"]["selector"])
        if spec["action"] in {"netem", "delay"}:
            assert DURATION.match(spec["delay"]["latency"]), where
        if spec["action"] in {"netem", "loss"}:
            assert 0 <= float(spec["loss"]["loss"]) <= 100, where
    if kind == "TimeChaos":
        assert re.fullmatch(r"[-+]?" + DURATION.pattern.strip("^$"), spec["timeOffset"]), where
        assert spec["containerNames"] == ["chorus"], where


def test_chaos_mesh_experiments_are_well_formed():
    docs = chaos_docs()
    assert docs
    names = set()
    for filename, doc in docs:
        where = f"{filename}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        assert doc["apiVersion"] == "chaos-mesh.org/v1alpha1", where
        assert doc["kind"] in CHAOS_KINDS, where
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == NAMESPACE, where
        assert len(doc["metadata"]["name"]) <= 57, f"{where}: Chaos Mesh appends 6 characters to names"
        names.add(doc["metadata"]["name"])
        spec = doc["spec"]
        if doc["kind"] == "Schedule":
            assert set(spec) <= CHAOS_KINDS["Schedule"], where
            assert spec["schedule"]
            inner = {"NetworkChaos": "networkChaos", "PodChaos": "podChaos", "TimeChaos": "timeChaos"}[spec["type"]]
            check_chaos_spec(where, spec["type"], spec[inner])
        else:
            check_chaos_spec(where, doc["kind"], spec)
    assert len(names) == len(docs), "experiment names repeat"


def test_chaos_scenarios_as_specified():
    by_file: dict[str, list[dict]] = {}
    for filename, doc in chaos_docs():
        by_file.setdefault(filename, []).append(doc)
    (kill,) = by_file["pod-kill.yaml"]
    assert kill["kind"] == "PodChaos" and kill["spec"]["action"] == "pod-kill" and kill["spec"]["mode"] == "one"
    (site_down,) = by_file["site-down.yaml"]
    assert site_down["kind"] == "PodChaos" and site_down["spec"]["mode"] == "all"
    assert site_down["spec"]["selector"]["labelSelectors"]["site"] == "london"
    (cut,) = by_file["cut.yaml"]
    assert cut["spec"]["action"] == "partition" and cut["spec"]["direction"] == "both"
    assert cut["spec"]["selector"]["labelSelectors"]["site"] == "london"
    assert cut["spec"]["target"]["selector"]["expressionSelectors"][0]["values"] == ["newyork", "tokyo"]
    (bridge,) = by_file["bridge.yaml"]
    sides = {bridge["spec"]["selector"]["labelSelectors"]["site"], bridge["spec"]["target"]["selector"]["labelSelectors"]["site"]}
    assert bridge["spec"]["action"] == "partition" and len(sides) == 2 and "london" not in sides
    (blips,) = by_file["blips.yaml"]
    assert blips["kind"] == "Schedule" and blips["spec"]["schedule"] == "@every 10s"
    assert blips["spec"]["networkChaos"]["action"] == "partition"
    assert blips["spec"]["networkChaos"]["duration"] == "50ms"
    wan = by_file["wan.yaml"]
    assert {w["spec"]["selector"]["labelSelectors"]["site"] for w in wan} == set(SITES)
    for w in wan:
        assert w["spec"]["action"] == "netem"
        assert w["spec"]["delay"]["latency"] == "80ms" and w["spec"]["delay"]["jitter"] == "20ms"
        assert w["spec"]["loss"]["loss"] == "1"
        targets = set(w["spec"]["target"]["selector"]["expressionSelectors"][0]["values"])
        assert targets == set(SITES) - {w["spec"]["selector"]["labelSelectors"]["site"]}
    (skew,) = by_file["clock-skew.yaml"]
    assert skew["kind"] == "TimeChaos" and skew["spec"]["timeOffset"] == "5m" and skew["spec"]["mode"] == "one"


def test_chaos_readme_maps_every_scenario_to_existing_files():
    readme = (CHAOS / "README.md").read_text()
    files = {p.name for p in CHAOS.glob("*.yaml")}
    for scenario in ("kill", "site-down", "pause", "cut", "bridge", "blips", "wan", "rolling-restart", "clock-skew"):
        row = re.search(rf"^\| `{re.escape(scenario)}` \|(.*)$", readme, re.M)
        assert row, f"README.md has no table row for scenario {scenario}"
        for name in re.findall(r"`([\w.-]+\.yaml)`", row.group(1)):
            assert name in files, f"README.md names {name} for {scenario}, which does not exist"
    for name in files:
        assert f"`{name}`" in readme, f"README.md does not mention {name}"


# ------------------------------------------------------- Grafana dashboard


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def all_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def test_grafana_dashboard_is_a_dashboard():
    dash = dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in all_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = set()
    for p in all_panels(dash["panels"]):
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))


def dashboard_queries() -> list[tuple[str, str]]:
    out = []
    dash = dashboard()
    for p in all_panels(dash["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            # label_values(SELECTOR, LABEL): the selector is the query.
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", v["query"]["query"])
            assert m, f"variable {v['name']}: expected label_values(selector, label)"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def test_grafana_queries_use_only_chorus_metrics():
    queries = dashboard_queries()
    used = set()
    for title, expr in queries:
        names = promql_metric_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= METRICS, f"{title}: {expr!r} names unknown metrics {names - METRICS}"
        used |= names
    titles = " ".join(t.lower() for t, _ in queries)
    for wanted in ("sessions per node", "logins", "stanzas", "stream errors", "peer", "replication lag",
                   "outbox", "raft term", "leader", "apply lag", "spool", "archive records", "shipped"):
        assert wanted in titles, f"no panel about {wanted}"
    # The panels the dashboard is for.
    assert {"chorus_sessions", "chorus_cluster_peer_up", "chorus_raft_apply_lag", "chorus_archive_shipped_total"} <= used


# ------------------------------------------------------------- alerts


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_name_known_metrics_and_carry_severity_and_summary():
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for required in ("ChorusSiteUnreachable", "ChorusSpoolGrowing", "ChorusNoRaftLeader",
                     "ChorusArchiveApplyLag", "ChorusReplicationLag", "ChorusNodeDown",
                     "ChorusFatalError"):
        assert required in names, f"missing alert {required}"
    for rule in rules:
        metrics = promql_metric_names(rule["expr"])
        assert metrics, rule["alert"]
        assert metrics <= METRICS | SCRAPE_METRICS, f"{rule['alert']}: unknown metrics {metrics - METRICS - SCRAPE_METRICS}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
    by_name = {r["alert"]: r for r in rules}
    assert "chorus_cluster_peer_up" in by_name["ChorusSiteUnreachable"]["expr"]
    assert "deriv(chorus_archive_spool_depth[5m]) > 0" in by_name["ChorusSpoolGrowing"]["expr"]
    assert "chorus_raft_leader_known" in by_name["ChorusNoRaftLeader"]["expr"]
    assert "chorus_raft_apply_lag > 10000" in by_name["ChorusArchiveApplyLag"]["expr"]
    assert by_name["ChorusNodeDown"]["expr"].startswith("up")


def test_prometheusrule_is_generated_from_alerts():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_prometheusrule", MONITORING / "make-prometheusrule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (MONITORING / "prometheusrule.yaml").read_text()
    assert text == module.render(), "prometheusrule.yaml is stale: run python3 deploy/monitoring/make-prometheusrule.py"
    rule = yaml.safe_load(text)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] and rule["metadata"]["namespace"] == NAMESPACE
    assert rule["spec"]["groups"] == yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]


def test_podmonitor_scrapes_the_nodes_https_port():
    pm = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    assert pm["metadata"]["name"] and pm["metadata"]["namespace"] == NAMESPACE
    assert set(pm["spec"]) == {"selector", "podMetricsEndpoints"}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert set(endpoint) <= {"port", "path", "scheme", "interval", "tlsConfig", "relabelings"}
    assert (endpoint["port"], endpoint["path"], endpoint["scheme"]) == ("https", "/metrics", "https")
    # Never overwrite the metrics' own `site` label (the peer's site).
    assert all(r["targetLabel"] != "site" for r in endpoint["relabelings"])
    sts = one(render(OVERLAYS["london"]), "StatefulSet")
    assert selects(pm["spec"]["selector"], pod_labels(sts))
    assert any(p["name"] == endpoint["port"] and p["containerPort"] == 8080 for p in container(sts)["ports"])


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return path


def test_promtool_checks_and_unit_tests_the_rules():
    tool = promtool()
    for args in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts_test.yaml"]):
        out = subprocess.run([tool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"


def test_promtool_parses_every_dashboard_query(tmp_path):
    tool = promtool()
    rules = []
    for i, (_, expr) in enumerate(dashboard_queries()):
        expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
