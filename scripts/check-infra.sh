#!/usr/bin/env bash
# Validates the deployment manifests in infra/, offline (a step of
# scripts/test.sh; the tools come from scripts/deps.sh):
#
# 1. infra/k8s/*.yaml against the Kubernetes 1.29 API schemas, strictly
#    (kubernetes-validate: unknown fields are errors). Kinds it has no schema
#    for only get a WARN from it; here only KEDA's (keda.sh/v1alpha1
#    ScaledObject, TriggerAuthentication) may, any other fails.
# 2. infra/compose/docker-compose.yml against the Compose Specification
#    (check-jsonschema's vendored schema).
# 3. What schemas cannot see (Python below): every Deployment's probes,
#    resources, non-root and read-only root, drain timing, Prometheus
#    annotations; references between objects (Services, HPAs, PDBs, KEDA,
#    Secrets, ConfigMaps, named ports); every CASCADE_* variable names a
#    setting of platform/src/config.rs (Cascade refuses to start otherwise),
#    secrets come from the Secret; compose healthchecks and dependencies;
#    the Dockerfiles' users and listener (Cascade's and the CDN's image with
#    its purge module); the CDN configurations keep
#    infra/cdn/nginx.conf's caching rules (and pass `nginx -t` when nginx
#    is installed); the KEDA query runs against the migrations and returns
#    what its comment says, when a Postgres is at hand
#    (CASCADE_TEST_DATABASE_URL or CASCADE_DATABASE__URL, as scripts/stack.sh
#    exports them).
# 4. The Prometheus alert rules: `promtool check rules` and their unit tests
#    (`promtool test rules infra/prometheus/alerts_test.yml`).
#
#   scripts/check-infra.sh        exit 0 when all pass, 1 otherwise
set -euo pipefail
cd "$(dirname "$0")/.."

status=0

# --- 1. Kubernetes schemas ---------------------------------------------------
echo "check-infra: kubernetes-validate --strict -k 1.29 infra/k8s/*.yaml"
set +e
k8s_out="$(python3 -m kubernetes_validate --strict -k 1.29 --quiet infra/k8s/*.yaml 2>&1)"
k8s_rc=$?
set -e
# Without a schema a kind is only a WARN, and the exit status stays 0.
keda_warn="^WARN [^ ]+ Couldn't find schema for kind (ScaledObject|TriggerAuthentication) with api version keda\.sh/v1alpha1 "
unexpected="$(printf '%s\n' "$k8s_out" | grep -Ev "$keda_warn" | grep -v '^$' || true)"
if [ "$k8s_rc" -ne 0 ] || [ -n "$unexpected" ]; then
  printf '%s\n' "${unexpected:-kubernetes-validate exited with $k8s_rc}" >&2
  echo "check-infra: FAILED: Kubernetes schema validation (only KEDA's kinds may lack a schema)" >&2
  status=1
fi

# --- 2. Compose schema -------------------------------------------------------
echo "check-infra: check-jsonschema --builtin-schema vendor.compose-spec infra/compose/docker-compose.yml"
if ! python3 -m check_jsonschema --builtin-schema vendor.compose-spec infra/compose/docker-compose.yml >/dev/null; then
  python3 -m check_jsonschema --builtin-schema vendor.compose-spec infra/compose/docker-compose.yml >&2 || true
  echo "check-infra: FAILED: compose schema validation" >&2
  status=1
fi

# --- 3. Structure, references, config keys, nginx, the KEDA query -------------
echo "check-infra: structural checks"
psql_bin="$(scripts/tool-path.sh psql 2>/dev/null || true)"
if ! PSQL="$psql_bin" python3 - <<'PY'
import difflib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml  # PyYAML, a dependency of kubernetes-validate

errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


def note(message):
    print(f"check-infra: {message}")


# --- Cascade's settings, read from the config tree ---------------------------
# Every CASCADE_A__B variable must name a setting (`a.b`): Cascade stops at
# start-up on any other. Read from the structs of platform/src/config.rs:
# `pub field: Type` lines, nested through the struct types.
def config_schema(path):
    text = open(path).read().split("#[cfg(test)]")[0]
    text = "\n".join(l for l in text.splitlines() if not l.strip().startswith("//"))
    structs = {}
    for m in re.finditer(r"pub struct (\w+)\s*\{(.*?)\n\}", text, re.S):
        fields, attrs = {}, []
        for line in m.group(2).splitlines():
            s = re.sub(r"\s*//.*$", "", line.strip())
            if s.startswith("#["):
                attrs.append(s)
                continue
            f = re.match(r"pub (\w+):\s*(.+?),?$", s)
            if f:
                if not any(re.search(r"serde\((.*, )?skip[,)]", a) for a in attrs):
                    renamed = [r for a in attrs for r in re.findall(r'serde\((?:.*, )?rename = "(\w+)"', a)]
                    fields[renamed[0] if renamed else f.group(1)] = f.group(2)
                attrs = []
        structs[m.group(1)] = fields
    enums = {}
    for m in re.finditer(r'#\[serde\(rename_all = "(\w+)"\)\]\s*pub enum (\w+)\s*\{(.*?)\n\}', text, re.S):
        style, name, body = m.groups()
        variants = re.findall(r"^\s*(\w+),?\s*$", body, re.M)
        snake = [re.sub(r"(?<!^)([A-Z])", r"_\1", v).lower() for v in variants]
        enums[name] = snake if style == "snake_case" else [v.lower() for v in variants]
    return structs, enums


structs, enums = config_schema("platform/src/config.rs")
if "Config" not in structs or "http" not in structs["Config"]:
    fail("platform/src/config.rs", "cannot read the config structs (the parser below needs updating)")


def inner_type(ty):
    m = re.fullmatch(r"(?:Option|Vec)<(.+)>", ty.strip())
    return m.group(1) if m else ty.strip()


def holds_secret(ty, seen=()):
    ty = inner_type(inner_type(ty))
    if ty == "Secret":
        return True
    if ty in structs and ty not in seen:
        return any(holds_secret(t, seen + (ty,)) for t in structs[ty].values())
    return False


def setting(var):
    """The type of the setting a CASCADE_* variable names, or None."""
    struct = "Config"
    parts = var[len("CASCADE_"):].lower().split("__")
    for i, part in enumerate(parts):
        ty = structs.get(struct, {}).get(part)
        if ty is None:
            return None
        if i == len(parts) - 1:
            return ty
        struct = inner_type(ty)
        if struct not in structs:
            return None


def check_var(where, var, value=None):
    if not var.startswith("CASCADE_") or var == "CASCADE_CONFIG" or var.startswith("CASCADE_TEST_"):
        return None
    ty = setting(var)
    if ty is None:
        fail(where, f"{var} names no setting in platform/src/config.rs (Cascade would refuse to start)")
        return None
    enum = inner_type(ty)
    if value is not None and enum in enums and str(value) not in enums[enum]:
        fail(where, f"{var}={value}: not one of {', '.join(enums[enum])}")
    return ty


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(duration).strip())
    if not m:
        return None
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# --- Kubernetes --------------------------------------------------------------
objects = []  # (file, object)
for path in sorted(glob.glob("infra/k8s/*.yaml")):
    try:
        for doc in yaml.safe_load_all(open(path)):
            if doc:
                objects.append((path, doc))
    except yaml.YAMLError as e:
        fail(path, f"not YAML: {e}")

by_kind = {}
for path, obj in objects:
    key = (obj.get("kind"), obj.get("metadata", {}).get("name"))
    if key in by_kind:
        fail(path, f"{key[0]} {key[1]} is defined twice (also in {by_kind[key][0]})")
    by_kind[key] = (path, obj)
    if obj.get("metadata", {}).get("namespace"):
        fail(path, f"{key[0]} {key[1]}: no namespace in the manifests (apply with -n)")


def get(kind, name):
    return by_kind.get((kind, name), (None, None))[1]


def where(path, obj):
    return f"{path}: {obj['kind']} {obj['metadata']['name']}"


deployments = [(p, o) for p, o in objects if o.get("kind") == "Deployment"]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pods_selected(selector):
    return [(p, d) for p, d in deployments
            if selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))]


def container_ports(deployment):
    ports = {}
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        for port in c.get("ports", []):
            ports[port.get("name")] = port["containerPort"]
            ports[port["containerPort"]] = port["containerPort"]
    return ports


configmaps = {o["metadata"]["name"]: o.get("data", {}) for _, o in objects if o.get("kind") == "ConfigMap"}
secrets = {o["metadata"]["name"]: {**o.get("data", {}), **o.get("stringData", {})}
           for _, o in objects if o.get("kind") == "Secret"}

autoscaled = set()
for path, obj in objects:
    if obj.get("kind") == "HorizontalPodAutoscaler":
        ref = obj["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or get("Deployment", ref.get("name")) is None:
            fail(where(path, obj), f"scales {ref.get('kind')} {ref.get('name')}, which is not here")
        autoscaled.add(ref.get("name"))
    if obj.get("kind") == "ScaledObject":
        autoscaled.add(obj["spec"]["scaleTargetRef"]["name"])

for path, dep in deployments:
    w = where(path, dep)
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    annotations = spec["template"]["metadata"].get("annotations", {})
    selector = spec["selector"].get("matchLabels", {})
    if not selects(selector, labels):
        fail(w, "spec.selector does not match the pod template's labels")
    for other_path, other in deployments:
        if other is not dep and selects(selector, other["spec"]["template"]["metadata"].get("labels", {})):
            fail(w, f"its selector also matches the pods of Deployment {other['metadata']['name']}")
    if dep["metadata"]["name"] in autoscaled and "replicas" in spec:
        fail(w, "autoscaled, so no spec.replicas (each apply would reset the autoscaler's count)")
    if pod.get("enableServiceLinks") is not False:
        fail(w, "enableServiceLinks: false is needed (Service links inject CASCADE_* variables "
                "that Cascade would refuse as unknown settings)")
    pod_sc = pod.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True:
        fail(w, "securityContext.runAsNonRoot: true is missing")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        cw = f"{w} container {c['name']}"
        sc = c.get("securityContext", {})
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if not isinstance(uid, int) or uid == 0:
            fail(cw, "runAsUser must be a non-zero uid (pod or container securityContext)")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(cw, "readOnlyRootFilesystem: true is missing")
        else:
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
                fail(cw, "a read-only root needs an emptyDir mounted on /tmp")
        if sc.get("privileged"):
            if sc.get("allowPrivilegeEscalation") is False:
                fail(cw, "privileged with allowPrivilegeEscalation: false is refused by the API server")
        elif sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "allowPrivilegeEscalation: false is missing")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            fail(cw, "capabilities.drop: [ALL] is missing")
        if not c.get("image"):
            fail(cw, "no image")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe, path_wanted in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = c.get(probe, {}).get("httpGet")
            if not http or http.get("path") != path_wanted:
                fail(cw, f"{probe} must GET {path_wanted}")
            elif http.get("port") not in ports and http.get("port") not in ports.values():
                fail(cw, f"{probe} port {http.get('port')} is not a container port")
        res = c.get("resources", {})
        requests, limits = res.get("requests", {}), res.get("limits", {})
        for r in ("cpu", "memory"):
            if r not in requests:
                fail(cw, f"resources.requests.{r} is missing")
        if "memory" not in limits:
            fail(cw, "resources.limits.memory is missing")
        for r, v in requests.items():
            if "/" in r and str(limits.get(r)) != str(v):
                fail(cw, f"extended resource {r}: Kubernetes needs a limit equal to the request")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre_stop_s = int(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0
        if pre_stop and not pre_stop_s:
            fail(cw, f"preStop {pre_stop}: expected [sleep, N]")
        if grace < pre_stop_s + 10:
            fail(cw, f"terminationGracePeriodSeconds {grace} leaves under 10 s after preStop's {pre_stop_s} s")

        args = c.get("command", []) + c.get("args", [])
        if args[:1] != ["cascade"]:
            continue
        # A Cascade container.
        env, env_from_values = {}, {}
        for ref in c.get("envFrom", []):
            name = ref.get("configMapRef", {}).get("name")
            if name is not None:
                if name not in configmaps:
                    fail(cw, f"envFrom ConfigMap {name} is not here")
                env_from_values.update(configmaps.get(name, {}))
            if "secretRef" in ref:
                fail(cw, "envFrom a Secret: name each secret variable instead")
        for e in c.get("env", []):
            env[e["name"]] = e
            key_ref = e.get("valueFrom", {}).get("secretKeyRef")
            if key_ref and key_ref.get("key") not in secrets.get(key_ref.get("name"), {}):
                fail(cw, f"{e['name']}: Secret {key_ref.get('name')} has no key {key_ref.get('key')}")
        values = dict(env_from_values)
        for name, e in env.items():
            values[name] = e.get("value")
        for name, value in values.items():
            ty = check_var(cw, name, value)
            if ty and holds_secret(ty):
                e = env.get(name, {})
                if "secretKeyRef" not in e.get("valueFrom", {}):
                    fail(cw, f"{name} is a secret: take it from a Secret (secretKeyRef), not a value or ConfigMap")
        roles = args[args.index("--roles") + 1].split(",") if "--roles" in args else ["ingest", "workers", "origin"]
        for var in ("CASCADE_DATABASE__URL", "CASCADE_STORAGE__S3__ENDPOINT",
                    "CASCADE_STORAGE__S3__ACCESS_KEY_ID", "CASCADE_STORAGE__S3__SECRET_ACCESS_KEY"):
            if var not in values:
                fail(cw, f"{var} is not set")
        if ("ingest" in roles or "origin" in roles) and "CASCADE_PLAYBACK__SIGNING_KEYS" not in values:
            fail(cw, "ingest mints and the origin verifies playback tokens: CASCADE_PLAYBACK__SIGNING_KEYS is needed")
        if "workers" in roles:
            drain = seconds(values.get("CASCADE_QUEUE__SHUTDOWN_GRACE") or "30s")
            if drain is None or grace < pre_stop_s + drain + 10:
                fail(cw, f"terminationGracePeriodSeconds {grace} must exceed queue.shutdown_grace "
                         f"({values.get('CASCADE_QUEUE__SHUTDOWN_GRACE') or '30s'}) by 10 s, "
                         "so jobs finish or are released before SIGKILL")
        listen = values.get("CASCADE_HTTP__LISTEN", "")
        if not listen.startswith("0.0.0.0:"):
            fail(cw, f"CASCADE_HTTP__LISTEN={listen!r}: must listen on all interfaces (0.0.0.0:PORT)")
        elif ports.get("http") != int(listen.rsplit(":", 1)[1]):
            fail(cw, f"container port `http` {ports.get('http')} is not http.listen's {listen}")
        if (annotations.get("prometheus.io/scrape") != "true"
                or annotations.get("prometheus.io/path") != "/metrics"
                or annotations.get("prometheus.io/port") != str(ports.get("http"))):
            fail(w, "pod annotations prometheus.io/scrape \"true\", /path /metrics, /port (the http port) are missing")

for path, obj in objects:
    kind, spec, w = obj.get("kind"), obj.get("spec", {}), None
    if kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        w = where(path, obj)
        selector = (spec.get("selector") if kind == "Service"
                    else spec.get("selector", spec.get("podSelector", {})).get("matchLabels"))
        matched = pods_selected(selector or {})
        if not matched:
            fail(w, f"selects no Deployment's pods ({selector})")
        if kind == "Service":
            for port in spec.get("ports", []):
                target = port.get("targetPort", port["port"])
                for _, d in matched:
                    if target not in container_ports(d):
                        fail(w, f"targetPort {target} is not a port of Deployment {d['metadata']['name']}")
        if kind == "NetworkPolicy":
            for rule in spec.get("ingress", []):
                for port in rule.get("ports", []):
                    for _, d in matched:
                        if port.get("port") not in container_ports(d):
                            fail(w, f"port {port.get('port')} is not a port of Deployment {d['metadata']['name']}")
    if kind == "TriggerAuthentication":
        for ref in spec.get("secretTargetRef", []):
            if ref.get("key") not in secrets.get(ref.get("name"), {}):
                fail(where(path, obj), f"Secret {ref.get('name')} has no key {ref.get('key')}")
    if kind == "Deployment":
        for v in spec["template"]["spec"].get("volumes", []):
            name = v.get("configMap", {}).get("name")
            if name is not None and name not in configmaps:
                fail(where(path, obj), f"volume {v['name']}: ConfigMap {name} is not here")

keda_queries = []
for path, obj in objects:
    if obj.get("kind") != "ScaledObject":
        continue
    w = where(path, obj)
    spec = obj["spec"]
    target = get("Deployment", spec["scaleTargetRef"]["name"])
    if target is None:
        fail(w, f"scales Deployment {spec['scaleTargetRef']['name']}, which is not here")
        continue
    if spec.get("minReplicaCount", 0) < 1:
        fail(w, "minReplicaCount must be at least 1: workers also run jobs the trigger does not count")
    concurrency = "2"
    for c in target["spec"]["template"]["spec"]["containers"]:
        for e in c.get("env", []):
            if e["name"] == "CASCADE_QUEUE__CONCURRENCY":
                concurrency = str(e.get("value"))
    for trigger in spec.get("triggers", []):
        auth = trigger.get("authenticationRef", {}).get("name")
        if get("TriggerAuthentication", auth) is None:
            fail(w, f"authenticationRef {auth} is not a TriggerAuthentication here")
        if trigger.get("type") != "postgresql":
            continue
        meta = trigger.get("metadata", {})
        query = meta.get("query")
        if not isinstance(query, str) or "'transcode'" not in query:
            fail(w, "the postgresql trigger needs a query over kind 'transcode' jobs")
            continue
        if str(meta.get("targetQueryValue")) != concurrency:
            fail(w, f"targetQueryValue {meta.get('targetQueryValue')!r} must equal the Deployment's "
                    f"queue.concurrency ({concurrency}): KEDA divides the query's job slots by it")
        keda_queries.append((w, query))

# --- Compose ------------------------------------------------------------------
compose_path = "infra/compose/docker-compose.yml"
compose = yaml.safe_load(open(compose_path))
services = compose.get("services", {})
published = {}  # host port -> service
for name, svc in services.items():
    for p in svc.get("ports", []):
        parts = str(p).split("/")[0].split(":")  # [ip:]host:container
        if len(parts) >= 2:
            published[int(parts[-2])] = name
waits = {}  # service -> [(dependent, condition)]
for name, svc in services.items():
    w = f"{compose_path}: service {name}"
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):
        fail(w, "depends_on needs the long form, each with a condition")
        deps = {}
    for dep, spec in deps.items():
        if dep not in services:
            fail(w, f"depends on {dep}, which is not a service")
        condition = (spec or {}).get("condition")
        if condition not in ("service_healthy", "service_completed_successfully", "service_started"):
            fail(w, f"depends_on {dep}: no condition")
        waits.setdefault(dep, []).append((name, condition))
for name, svc in services.items():
    w = f"{compose_path}: service {name}"
    hc = svc.get("healthcheck") or {}
    if hc.get("disable"):
        # Only a one-shot may go without: everything waiting on it waits for its exit.
        if any(cond != "service_completed_successfully" for _, cond in waits.get(name, [])) or not waits.get(name):
            fail(w, "no healthcheck: only a one-shot that others await with service_completed_successfully may")
    elif not hc.get("test"):
        fail(w, "no healthcheck")
    for dependent, cond in waits.get(name, []):
        if cond == "service_healthy" and (hc.get("disable") or not hc.get("test")):
            fail(f"{compose_path}: service {dependent}", f"waits for {name} to be healthy, which has no healthcheck")
    for vol in svc.get("volumes", []):
        source = str(vol).split(":")[0]
        if source.startswith("."):
            if not os.path.exists(os.path.join(os.path.dirname(compose_path), source)):
                fail(w, f"mounts {source}, which does not exist")
    build = svc.get("build")
    if not (isinstance(build, dict) and build.get("dockerfile") == "infra/Dockerfile"):
        continue
    # A Cascade service (the CDN's image is built from infra/cdn/).
    env = svc.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    for var, value in env.items():
        check_var(w, var, value)
    if not svc.get("read_only"):
        fail(w, "read_only: true is missing (the image writes nothing outside /tmp)")
    command = svc.get("command", [])
    for var, role in (("CASCADE_INGEST__PUBLIC_URL", "ingest"), ("CASCADE_PLAYBACK__PUBLIC_URL", "cdn")):
        m = re.fullmatch(r"https?://(localhost|127\.0\.0\.1):(\d+)/?", str(env.get(var, "")))
        if not m:
            fail(w, f"{var} should be this host's published address (http://localhost:PORT)")
        elif published.get(int(m.group(2))) != role:
            fail(w, f"{var}: port {m.group(2)} is not published by service {role}")

healthcheck_uses_curl = any("curl" in (svc.get("healthcheck") or {}).get("test", []) for svc in services.values())

# --- Dockerfile, .dockerignore ------------------------------------------------
dockerfile = open("infra/Dockerfile").read()
final_stage = re.split(r"^FROM ", dockerfile, flags=re.M)[-1]
users = re.findall(r"^USER\s+(\S+)", final_stage, re.M)
if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
    fail("infra/Dockerfile", "the runtime stage must end as a numeric non-root USER (runAsNonRoot can only verify a number)")
for var, value in re.findall(r"^ENV\s+(CASCADE_\w+)=(\S+)", final_stage, re.M):
    check_var("infra/Dockerfile", var, value)
if not re.search(r"^ENV\s+CASCADE_HTTP__LISTEN=0\.0\.0\.0:8080\b", final_stage, re.M):
    fail("infra/Dockerfile", "ENV CASCADE_HTTP__LISTEN=0.0.0.0:8080 is missing (the default listens on loopback only)")
if healthcheck_uses_curl and not re.search(r"apt-get install[^\n]*(\\\n[^\n]*)*\bcurl\b", final_stage):
    fail("infra/Dockerfile", "compose healthchecks run curl, which the runtime stage does not install")
cdn_dockerfile = open("infra/cdn/Dockerfile").read()
cdn_users = re.findall(r"^USER\s+(\S+)", cdn_dockerfile, re.M)
if not cdn_users or not re.fullmatch(r"[1-9]\d*(:\d+)?", cdn_users[-1]):
    fail("infra/cdn/Dockerfile", "the image must end as a numeric non-root USER")
if "libnginx-mod-http-cache-purge" not in cdn_dockerfile:
    fail("infra/cdn/Dockerfile", "the purge listener needs libnginx-mod-http-cache-purge")
ignored = set(open(".dockerignore").read().split()) if os.path.exists(".dockerignore") else set()
for entry in ("target", ".data", "**/node_modules", ".git"):
    if entry not in ignored and entry + "/" not in ignored:
        fail(".dockerignore", f"{entry} must stay out of the build context")


# --- The CDN configurations against infra/cdn/nginx.conf ----------------------
def nginx_parse(text):
    """nginx.conf as nested [name, args, children] (comments dropped;
    the template's {{PLACEHOLDERS}} become plain words)."""
    text = re.sub(r"\{\{(\w+)\}\}", r"@\1@", text)
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#[^\n]*|[{};]|[^\s{};]+', text)
    root, stack, words = [], [], []
    current = root
    for t in tokens:
        if t.startswith("#"):
            continue
        if t == ";":
            current.append([words[0], words[1:], None])
            words = []
        elif t == "{":
            block = [words[0], words[1:], []]
            current.append(block)
            stack.append(current)
            current, words = block[2], []
        elif t == "}":
            current = stack.pop()
        else:
            words.append(t)
    return root


def nginx_normal(tree, adapted):
    """What must match: everything but where it runs (user, workers, pid,
    listen address, upstream address, cache directory) and the adapted
    files' health locations."""
    out = []
    for name, args, children in tree:
        if name in ("user", "worker_processes"):
            continue
        if adapted and name == "location" and args in (["=", "/healthz"], ["=", "/readyz"]):
            continue
        if name in ("listen", "server") and children is None:
            args = ["*"]
        if name == "proxy_cache_path":
            args = ["*"] + args[1:]
        if name == "pid":
            args = ["*"]
        out.append((name, tuple(args), None if children is None else tuple(nginx_normal(children, adapted))))
    return out


def nginx_render(tree, depth=0):
    lines = []
    for name, args, children in tree:
        lines.append("    " * depth + " ".join((name,) + args) + (" {" if children is not None else ";"))
        if children is not None:
            lines += nginx_render(children, depth + 1) + ["    " * depth + "}"]
    return lines


template = nginx_normal(nginx_parse(open("infra/cdn/nginx.conf").read()), False)
cdn_configs = [("infra/compose/cdn.conf", open("infra/compose/cdn.conf").read())]
cdn_cm = configmaps.get("cascade-cdn", {}).get("nginx.conf")
if cdn_cm is None:
    fail("infra/k8s/cdn.yaml", "ConfigMap cascade-cdn has no nginx.conf")
else:
    cdn_configs.append(("infra/k8s/cdn.yaml ConfigMap cascade-cdn", cdn_cm))
for name, text in cdn_configs:
    tree = nginx_parse(text)
    got = nginx_normal(tree, True)
    if got != template:
        diff = "\n".join(difflib.unified_diff(nginx_render(template), nginx_render(got),
                                              "infra/cdn/nginx.conf", name, lineterm="", n=1))
        fail(name, "differs from infra/cdn/nginx.conf beyond where it runs:\n" + diff)
    names = [n for n, _, _ in tree]
    if "user" in names:
        fail(name, "a `user` directive: the container runs nginx unprivileged already")

nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
if nginx is None:
    note("nginx not installed: skipped `nginx -t` of the CDN configurations")
else:
    for name, text in cdn_configs:
        with tempfile.TemporaryDirectory() as tmp:
            # Where it runs, made local: the upstream on loopback (its name
            # resolves only in the cluster or compose network), the cache here.
            local = re.sub(r"(\n\s*server\s+)[^\s;]+:(\d+)", r"\g<1>127.0.0.1:\2", text)
            local = re.sub(r"proxy_cache_path\s+\S+", f"proxy_cache_path {tmp}/cache", local)
            conf = os.path.join(tmp, "nginx.conf")
            open(conf, "w").write(local)
            run = subprocess.run([nginx, "-t", "-q", "-p", tmp + "/", "-c", conf, "-e", "stderr"],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                fail(name, "nginx -t: " + (run.stderr or run.stdout).strip())

# --- The KEDA query, run against the migrations -------------------------------
psql = os.environ.get("PSQL")
db_url = os.environ.get("CASCADE_TEST_DATABASE_URL") or os.environ.get("CASCADE_DATABASE__URL")
if not keda_queries:
    fail("infra/k8s", "no ScaledObject with a postgresql query")
elif not psql or not db_url:
    note("no Postgres at hand (psql and CASCADE_TEST_DATABASE_URL or CASCADE_DATABASE__URL): "
         "skipped running the KEDA query")
else:
    # In a scratch schema inside a transaction that is rolled back: nothing
    # stays in the database. Cases: an empty queue gives 0; one slot per
    # running and ready transcode (not scheduled retries, finished jobs or
    # other kinds); more once the oldest ready job has waited 5 minutes.
    script = ["\\set ON_ERROR_STOP on", "BEGIN;", "CREATE SCHEMA cascade_check_infra;",
              "SET LOCAL search_path = cascade_check_infra;"]
    for migration in sorted(glob.glob("schemas/migrations/*.sql")):
        script.append(open(migration).read())
    fixtures = {
        "fresh": "INSERT INTO jobs (kind, state, run_at) VALUES "
                 "('transcode', 'running', now()), ('transcode', 'queued', now()), "
                 "('transcode', 'queued', now() - interval '10 seconds'), "
                 "('transcode', 'queued', now() + interval '1 hour'), "
                 "('transcode', 'succeeded', now()), ('transcode', 'dead', now()), "
                 "('webhook', 'queued', now() - interval '1 hour'), ('webhook', 'running', now());",
        "stale": "INSERT INTO jobs (kind, state, run_at) VALUES ('transcode', 'queued', now() - interval '5 minutes');",
    }
    distinct = sorted(set(q for _, q in keda_queries))
    for i, query in enumerate(distinct):
        script.append(f"SELECT 'q{i} empty', ({query});")
    script.append(fixtures["fresh"])
    for i, query in enumerate(distinct):
        script.append(f"SELECT 'q{i} fresh', ({query});")
    script.append(fixtures["stale"])
    for i, query in enumerate(distinct):
        script.append(f"SELECT 'q{i} stale', ({query});")
    script.append("ROLLBACK;")
    run = subprocess.run([psql, db_url, "-X", "-q", "-A", "-t", "-F", "|"],
                         input="\n".join(script), capture_output=True, text=True)
    results = dict(line.split("|", 1) for line in run.stdout.splitlines() if "|" in line)
    if run.returncode != 0:
        fail("KEDA query", "psql: " + run.stderr.strip())
    for i, query in enumerate(distinct):
        names = ", ".join(w for w, q in keda_queries if q == query)
        got = {case: results.get(f"q{i} {case}") for case in ("empty", "fresh", "stale")}
        try:
            values = {case: float(v) for case, v in got.items()}
        except (TypeError, ValueError):
            fail(names, f"the KEDA query must return one number, always (got {got})")
            continue
        # fresh: 1 running + 2 ready = 3 slots; stale adds a ready job that waited 5 minutes.
        if values["empty"] != 0 or values["fresh"] != 3 or not values["stale"] > 4:
            fail(names, f"the KEDA query returned {got}: expected empty 0, fresh 3 "
                        "(1 running + 2 ready transcodes), stale above 4 (a waiting job counts more)")
    note(f"KEDA query ran against the migrations ({len(distinct)} distinct)")

for e in errors:
    print(f"check-infra: {e}", file=sys.stderr)
note(f"{len(objects)} Kubernetes objects, {len(services)} compose services: {len(errors)} structural problems")
sys.exit(1 if errors else 0)
PY
then
  echo "check-infra: FAILED: structural checks" >&2
  status=1
fi

# --- 4. Prometheus alert rules -------------------------------------------------
if ! promtool check rules infra/prometheus/alerts.yml >/dev/null; then
  echo "check-infra: FAILED: promtool check rules infra/prometheus/alerts.yml" >&2
  status=1
fi
if ! (cd infra/prometheus && promtool test rules alerts_test.yml >/dev/null); then
  echo "check-infra: FAILED: promtool test rules infra/prometheus/alerts_test.yml" >&2
  status=1
fi

if [ "$status" -eq 0 ]; then
  echo "check-infra: ok"
fi
exit "$status"
