#!/usr/bin/env python3
"""Writes prometheusrule.yaml from alerts.yaml: the same rule groups, with
their comments, indented under a PrometheusRule's `spec:`.

    python3 deploy/monitoring/make-prometheusrule.py

tests/deploy fails when prometheusrule.yaml is not what this prints.
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent

HEADER = """\
# GENERATED from alerts.yaml by make-prometheusrule.py: edit alerts.yaml,
# then run `python3 deploy/monitoring/make-prometheusrule.py`.
#
# The rules of alerts.yaml as a PrometheusRule for the Prometheus Operator
# (kube-prometheus-stack). The operator only loads rules whose labels match
# its ruleSelector: with kube-prometheus-stack that is usually
# `release: <helm release name>`; adjust the label below to yours.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: chorus
  namespace: chorus
  labels:
    app.kubernetes.io/name: chorus
    release: kube-prometheus-stack
spec:
"""


def render() -> str:
    """The text prometheusrule.yaml must have."""
    source = (HERE / "alerts.yaml").read_text()
    groups = source[source.index("\ngroups:\n") + 1 :]
    return HEADER + "".join("  " + line if line.strip() else line for line in groups.splitlines(True))


if __name__ == "__main__":
    out = HERE / "prometheusrule.yaml"
    out.write_text(render())
    print(f"wrote {out}", file=sys.stderr)
