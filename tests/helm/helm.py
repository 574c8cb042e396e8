#!/usr/bin/env python3
"""Helm itself for charts/sockgate: no helm binary is installable on these
machines, but the PyPI package helm-python-sdk bundles Helm v4's own Go SDK
(installed by `cargo xtask setup`). One command a call, as an operator would
type `helm template`, `helm lint`, `helm install`, `helm upgrade`,
`helm rollback` and `helm uninstall`:

  helm.py render    CHART --name N --namespace NS [--values JSON] [--include-crds]
  helm.py lint      CHART [--values JSON]
  helm.py install   CHART --name N --namespace NS --kubeconfig K [--values JSON] [--wait SECONDS]
  helm.py upgrade   CHART --name N --namespace NS --kubeconfig K [--values JSON] [--wait SECONDS]
  helm.py rollback  --name N --namespace NS --kubeconfig K [--revision R] [--wait SECONDS]
  helm.py uninstall --name N --namespace NS --kubeconfig K [--wait SECONDS]
  helm.py history   --name N --namespace NS --kubeconfig K

`render` prints the objects as multi-document YAML, as `helm template`
does (offline: .Capabilities is Helm's default, the newest Kubernetes;
`install` and `upgrade` ask the cluster). The others print Helm's JSON answer.
"""
import argparse
import json
import sys

import helm_python


def documents(manifests):
    """Helm's template-path -> manifest map as one YAML stream, in path order."""
    out = []
    for path in sorted(manifests):
        text = manifests[path].strip()
        if text:
            out.append(f"# Source: {path}\n{text}\n")
    return "---\n".join(out)


def config(args):
    return helm_python.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)


def wait_kind(args):
    # Helm's watcher waits for the release's objects to be ready (a DaemonSet's pods Ready).
    return "watcher" if args.wait else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["render", "lint", "install", "upgrade", "rollback", "uninstall", "history"])
    parser.add_argument("chart", nargs="?")
    parser.add_argument("--name", default="sockgate")
    parser.add_argument("--namespace", default="sockgate-system")
    parser.add_argument("--values", default="{}", help="values as JSON, merged over the chart's values.yaml")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--include-crds", action="store_true")
    parser.add_argument("--wait", type=int, default=0, help="seconds to wait for the release's objects to be ready")
    parser.add_argument("--revision", type=int)
    args = parser.parse_args()
    values = json.loads(args.values)

    if args.action == "render":
        chart = helm_python.Chart.load(args.chart)
        manifests = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
        text = documents(manifests)
        if args.include_crds:
            crds = "---\n".join(c["data"].strip() + "\n" for c in chart.crds)
            text = crds + ("---\n" + text if text else "")
        sys.stdout.write(text)
        return
    if args.action == "lint":
        print(json.dumps(helm_python.lint(args.chart, values=values)))
        return
    helm = config(args)
    timeout = args.wait or None
    if args.action == "install":
        result = helm.install(args.chart, args.name, values, namespace=args.namespace, create_namespace=True, wait=wait_kind(args), timeout=timeout)
    elif args.action == "upgrade":
        result = helm.upgrade(args.chart, args.name, values, namespace=args.namespace, wait=wait_kind(args), timeout=timeout)
    elif args.action == "rollback":
        result = helm.rollback(args.name, version=args.revision, wait=wait_kind(args), timeout=timeout)
    elif args.action == "uninstall":
        result = helm.uninstall(args.name, ignore_not_found=True, wait=wait_kind(args), timeout=timeout)
    else:
        result = helm.history(args.name)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    try:
        main()
    except helm_python.HelmError as e:
        print(f"helm: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
