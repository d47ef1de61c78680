"""Renders the Helm chart with the real Helm engine (Helm 4 as a library, helm-python-sdk).

    python scripts/deploy/helm_render.py RELEASE NAMESPACE VALUES_JSON > objects.json

Prints one JSON array: every object of the chart's templates, in file order, then NOTES.txt is
left out. The chart's crds/ are not rendered (Helm installs them as they are); read them from
deploy/helm/hss-operator/crds/. Used by crates/hss-operator/tests/install/main.rs, which applies what this prints.
Run with the deploy venv's python (scripts/deploy-venv.sh prints its path).
"""
import json
import pathlib
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "helm" / "hss-operator"


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    release, namespace, values = argv[1], argv[2], json.loads(argv[3])
    with helm.Chart.load(CHART) as chart:
        out = chart.render(values=values, name=release, namespace=namespace)
    objects = []
    for path in sorted(out):
        if path.endswith((".yaml", ".yml")):
            objects += [d for d in yaml.safe_load_all(out[path]) if d]
    json.dump(objects, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
