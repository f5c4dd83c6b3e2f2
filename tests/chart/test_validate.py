"""Validates every rendered object, the CRD and the example against Kubernetes' own schemas."""

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, VALUE_SETS, render
from kubernetes_validate.utils import SchemaNotFoundError


def minor(v: str) -> int:
    return int(v.split(".")[1])


LATEST = kubernetes_validate.latest_version()
# Kubernetes 1.30 through the newest release kubernetes-validate bundles.
VERSIONS = [f"1.{m}.0" for m in range(30, minor(LATEST) + 1)]
# Prometheus Operator kinds: kubernetes-validate has no schema for custom resources.
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"


def crd() -> dict:
    [doc] = [d for d in yaml.safe_load_all((ROOT / "crds" / "kvcluster.yaml").read_text()) if d]
    return doc


def test_supported_range_reaches_the_newest_schema():
    assert minor(LATEST) >= 30
    assert VERSIONS[0] == "1.30.0" and VERSIONS[-1] == f"1.{minor(LATEST)}.0"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_rendered_objects_are_valid(value_set, version):
    checked = 0
    for obj in render(VALUE_SETS[value_set]):
        if obj["apiVersion"] == PROMETHEUS_OPERATOR:
            with pytest.raises(SchemaNotFoundError):
                kubernetes_validate.validate(obj, version, strict=True)
            continue
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("version", VERSIONS)
def test_crd_is_valid(version):
    kubernetes_validate.validate(crd(), version, strict=True)


def test_strict_validation_catches_a_misspelled_field():
    [deploy] = [o for o in render({}) if o["kind"] == "Deployment"]
    deploy["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, LATEST, strict=True)


def schema_for(kind_doc: dict) -> dict:
    [version] = [v for v in kind_doc["spec"]["versions"] if v["served"] and v["storage"]]
    return version["schema"]["openAPIV3Schema"]


def test_example_matches_the_crd():
    [example] = [d for d in yaml.safe_load_all((ROOT / "examples" / "kvcluster.yaml").read_text()) if d]
    definition = crd()
    assert example["apiVersion"] == f"{definition['spec']['group']}/{schema_version(definition)}"
    assert example["kind"] == definition["spec"]["names"]["kind"]
    jsonschema.validate(example["spec"], schema_for(definition)["properties"]["spec"])
    assert example["spec"]["replicas"] % 2 == 1


def test_crd_schema_rejects_a_bad_example():
    bad = {"replicas": "three", "storage": {"size": "1Gi"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema_for(crd())["properties"]["spec"])


def schema_version(definition: dict) -> str:
    [version] = [v["name"] for v in definition["spec"]["versions"] if v["storage"]]
    return version
