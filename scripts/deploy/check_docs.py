"""The chart's values documentation and deploy/samples: values.schema.json describes every
value and the README lists exactly them; the samples are valid against the CRDs' schemas and
CEL rules and hold placeholders only."""
import json
import pathlib
import re

import cel
import jsonschema
import yaml

from common import *  # noqa: F401,F403

def schema_leaves(schema, prefix=""):
    """Dotted value paths the schema documents; objects without properties are leaves."""
    out = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if not sub.get("description"):
            fail("values.schema.json", f"{path} has no description")
        if sub.get("type") == "object" and "properties" in sub:
            if sub.get("additionalProperties") is not False:
                fail("values.schema.json", f"{path} must set additionalProperties: false")
            out.update(schema_leaves(sub, path + "."))
        else:
            out[path] = sub
    return out


def value_leaves(values, schema, prefix=""):
    out = set()
    for key, v in values.items():
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(v, dict) and "properties" in sub:
            out |= value_leaves(v, sub, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def step_docs():
    schema = json.loads(pathlib.Path(CHART, "values.schema.json").read_text())
    if schema.get("additionalProperties") is not False:
        fail("values.schema.json", "the top level must set additionalProperties: false")
    leaves = schema_leaves(schema)
    leaves.pop("global", None)
    values = yaml.safe_load(pathlib.Path(CHART, "values.yaml").read_text())
    in_values = value_leaves(values, schema)
    for missing in sorted(set(leaves) - in_values):
        fail("values.yaml", f"{missing} is in the schema but has no default")
    for missing in sorted(in_values - set(leaves)):
        fail("values.schema.json", f"{missing} has no schema")
    readme = pathlib.Path(CHART, "README.md").read_text()
    section = readme.split("\n## Values\n", 1)[-1].split("\n## ", 1)[0]
    table = set(re.findall(r"(?m)^\| `([^`]+)` \|", section))
    for missing in sorted(set(leaves) - table):
        fail("chart README.md", f"values table lacks {missing}")
    for extra in sorted(table - set(leaves)):
        fail("chart README.md", f"values table lists unknown value {extra}")
    for needle in ("kubectl apply --server-side -f", "helm show crds"):
        if needle not in readme:
            fail("chart README.md", f"must document the CRD upgrade path ({needle})")


def crd_schemas():
    """{(apiVersion, kind): (json schema, openAPI schema)} from the chart's CRDs."""
    out = {}
    for doc in documents(pathlib.Path(CHART, "crds", "crds.yaml").read_text()):
        spec = doc["spec"]
        for v in spec["versions"]:
            api = f"{spec['group']}/{v['name']}"
            root = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            js = to_json_schema(root)
            js["properties"].update({
                "apiVersion": {"const": api}, "kind": {"const": spec["names"]["kind"]},
                "metadata": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "maxLength": 253,
                             "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
                    "namespace": {"type": "string"}, "labels": STRMAP, "annotations": STRMAP,
                    "generateName": {"type": "string"}}, "additionalProperties": False},
            })
            js.setdefault("required", []).extend(["apiVersion", "kind", "metadata"])
            out[(api, spec["names"]["kind"])] = (js, v["schema"]["openAPIV3Schema"])
    return out


def to_json_schema(s):
    """OpenAPI v3 (structural CRD schema) -> JSON Schema: nullable becomes a null type, unknown
    fields are rejected (the API server would prune them silently), x-kubernetes-* go."""
    s = {k: v for k, v in s.items() if not k.startswith("x-kubernetes-") or k == "x-kubernetes-preserve-unknown-fields"}
    preserve = s.pop("x-kubernetes-preserve-unknown-fields", False)
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    if "properties" in s:
        s["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not preserve:
            s["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = to_json_schema(s["additionalProperties"])
    if "items" in s:
        s["items"] = to_json_schema(s["items"])
    return s


def cel_errors(schema, value, path="self"):
    """Evaluates the x-kubernetes-validations rules (transition rules with oldSelf excepted)."""
    errs = []
    if value is None:
        return errs
    for v in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in v["rule"]:
            continue
        try:
            ok = cel.evaluate(v["rule"], {"self": value})
        except Exception as e:  # a rule that cannot evaluate is a finding too
            errs.append(f"{path}: rule {v['rule']!r} failed to evaluate: {e}")
            continue
        if ok is not True:
            errs.append(f"{path}: {v.get('message', v['rule'])}")
    if isinstance(value, dict):
        for k, sub in schema.get("properties", {}).items():
            errs += cel_errors(sub, value.get(k), f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errs += cel_errors(schema["items"], item, f"{path}[{i}]")
    return errs


def odd_keys(value, path=""):
    """Keys YAML 1.1 turned into non-strings (on/off/yes/no become booleans, for kubectl too)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                yield f"{path}/{k!r}: a key parsed as {type(k).__name__}; quote it (e.g. \"on\":)"
            yield from odd_keys(v, f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from odd_keys(v, f"{path}/{i}")


def sample_errors(obj, crds):
    odd = list(odd_keys(obj))
    if odd:
        return odd
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crds:
        js, openapi = crds[key]
        errs = [f"/{'/'.join(map(str, e.path))}: {e.message}"
                for e in jsonschema.Draft202012Validator(js).iter_errors(obj)]
        return errs + cel_errors(openapi, obj, "object")
    if obj.get("kind") == "Secret":
        bad = [k for k, v in {**obj.get("stringData", {}), **obj.get("data", {})}.items()
               if not str(v).startswith("REPLACE_WITH_")]
        if bad:
            return [f"Secret values must be REPLACE_WITH_... placeholders: {bad}"]
    errs = []
    for version in K8S_VERSIONS:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            errs.append(f"Kubernetes {version} /{'/'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errs.append(e.message)
    return errs


def step_samples():
    crds = crd_schemas()
    files = sorted(pathlib.Path("deploy/samples").glob("*.yaml"))
    if not files:
        fail("deploy/samples", "no samples")
    kinds = set()
    for f in files:
        for obj in documents(f.read_text()):
            kinds.add(obj.get("kind"))
            for e in sample_errors(obj, crds):
                fail(f"{f}", e)
    for needed in ("ClusterScanTask", "Secret"):
        if needed not in kinds:
            fail("deploy/samples", f"no {needed} sample")
    # The validators must bite: each of these must be refused.
    good = {"apiVersion": f"{GROUP}/v1alpha1", "kind": "ClusterScanTask", "metadata": {"name": "t"},
            "spec": {"taskType": "cluster_scan", "clusterScan": {"rangeType": "all_cluster", "scanTypes": ["benchmark"]}}}
    if sample_errors(good, crds):
        fail("self-test", f"a valid ClusterScanTask is refused: {sample_errors(good, crds)}")
    bad = {
        "CEL: specific_cluster without clusterIds": merged(good, {"spec": {"clusterScan": {"rangeType": "specific_cluster"}}}),
        "CEL: repeated scan type": merged(good, {"spec": {"clusterScan": {"scanTypes": ["benchmark", "benchmark"]}}}),
        "schema: unknown field": merged(good, {"spec": {"clusterScn": {}}}),
        "schema: enum": merged(good, {"spec": {"taskType": "host_scan"}}),
        "Secret: real-looking key": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                                     "stringData": {"accessKey": "AKIAREALKEY"}},
        "Kubernetes strict: unknown field": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "dta": {}},
    }
    for what, obj in bad.items():
        if not sample_errors(obj, crds):
            fail("self-test", f"not caught: {what}")
