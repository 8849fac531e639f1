"""What the fake kube-apiserver needs from the real one's rules: CRD structural-schema validation of a created
Restore, and the strategic merge patch that merges container lists and env lists by `name`.

The Restore CRD is the real file from vmware-tanzu/velero (`tests/data/velero/velero.io_restores.yaml`), so a
spec field drbot misspells, a wrong type or a phase outside the enum fails here as it would in a cluster.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import yaml

CRD_PATH = Path(__file__).resolve().parent.parent / "data" / "velero" / "velero.io_restores.yaml"
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "ports": "containerPort",
              "volumes": "name", "volumeMounts": "mountPath"}


def structural_to_jsonschema(node: Any) -> Any:
    """Translate an OpenAPI v3 structural schema: `nullable` becomes a null type, objects with `properties`
    reject unknown fields (strict field validation) unless marked `x-kubernetes-preserve-unknown-fields`."""
    if isinstance(node, list):
        return [structural_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in {"description", "nullable", "format"}:
            continue
        if key in {"properties", "patternProperties"}:
            out[key] = {name: structural_to_jsonschema(sub) for name, sub in value.items()}
        else:
            out[key] = structural_to_jsonschema(value)
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def restore_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is validated by the apiserver itself
    return jsonschema.Draft7Validator(schema)


def restore_causes(body: Any) -> list[dict[str, str]]:
    """The apiserver's `details.causes` for an invalid Restore: one per schema violation."""
    causes = []
    for error in sorted(restore_validator().iter_errors(body), key=lambda e: list(e.absolute_path)):
        field = ".".join(str(p) for p in error.absolute_path) or "<root>"
        reason = "FieldValueNotSupported" if error.validator == "enum" else (
            "FieldValueRequired" if error.validator == "required" else "FieldValueInvalid")
        if error.validator == "additionalProperties":
            reason = "FieldValueInvalid"
        causes.append({"reason": reason, "message": f"{field}: {error.message}", "field": field})
    return causes


def strategic_merge(target: Any, patch: Any, *, key: str = "") -> Any:
    """Strategic merge patch for the shapes Deployments and Secrets use: maps merge, `null` deletes, lists
    named in `MERGE_KEYS` merge element-wise by their merge key, other lists are replaced."""
    if isinstance(patch, dict) and isinstance(target, dict):
        merged = copy.deepcopy(target)
        for name, value in patch.items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = strategic_merge(merged.get(name), value, key=name)
        return merged
    if isinstance(patch, list) and isinstance(target, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        merged_list = copy.deepcopy(target)
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old.get(by) == item.get(by)), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = strategic_merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)
