"""Parses Prometheus text exposition from stdin with prometheus_client's own parser (the one
Prometheus's Python ecosystem uses) and prints every sample as JSON: {"name{k=v,...}": value},
labels sorted. A malformed exposition makes the parser raise, and this script exit non-zero."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
families = 0
for family in text_string_to_metric_families(sys.stdin.read()):
    families += 1
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps({"families": families, "samples": samples}))
