#!/usr/bin/env python3
"""Writes gateway-agent/src/sources/schema/gateway-api.json: the OpenAPI schemas of
the Gateway API kinds sockgate reads, per served version, from the v1.6.1 CRDs
(experimental channel: a superset of standard), without descriptions and CEL
rules, which the agent does not evaluate. Strict decoding checks every manifest
against these (unknown fields, types, ranges, enums, patterns).

    python3 tools/schemas/vendor-gateway-api.py ../shared/gateway-api/v1.6.1/experimental
"""
import json, os, sys, yaml

KEEP = {"type", "properties", "items", "required", "enum", "minimum", "maximum",
        "minItems", "maxItems", "minLength", "maxLength", "pattern", "format",
        "nullable", "additionalProperties", "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string", "anyOf", "oneOf", "allOf"}
FILES = ["gatewayclasses", "gateways", "tcproutes", "udproutes", "referencegrants", "listenersets"]

def strip(node):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k not in KEEP:
                continue
            if k == "properties":
                out[k] = {name: strip(s) for name, s in v.items()}
            else:
                out[k] = strip(v)
        return out
    if isinstance(node, list):
        return [strip(x) for x in node]
    return node

def main(src):
    schemas = {}
    for f in FILES:
        crd = yaml.safe_load(open(os.path.join(src, f + ".yaml")))
        kind = crd["spec"]["names"]["kind"]
        schemas[kind] = {v["name"]: strip(v["schema"]["openAPIV3Schema"]) for v in crd["spec"]["versions"] if v.get("served")}
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    out = os.path.join(root, "gateway-agent", "src", "sources", "schema", "gateway-api.json")
    with open(out, "w") as fh:
        json.dump({"bundleVersion": "v1.6.1", "kinds": schemas}, fh, sort_keys=True, separators=(",", ":"))
        fh.write("\n")

main(sys.argv[1] if len(sys.argv) > 1 else "../shared/gateway-api/v1.6.1/experimental")
