"""Reading metrics back from each platform's native form, for the contract suite.

Every parser returns `Totals`: for a counter the sum of its increments, for a histogram
(``observe``) the number of observations, per (metric name, dimensions). EMF lines are
also checked against the Embedded Metric Format specification's structure.
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from typing import Iterable, Mapping

from core.metrics import METRICS

Key = tuple[str, frozenset]
Totals = Counter


def key(name: str, **dims: str) -> Key:
    return (name, frozenset(dims.items()))


def _add(totals: Totals, kind: str, name: str, value: float, dims: Mapping[str, str]) -> None:
    if kind == "gauge":
        return  # a level, not a count: compared separately where a platform has one
    totals[(name, frozenset((k, str(v)) for k, v in dims.items()))] += value if kind == "count" else 1


def _kind(name: str) -> str:
    return {"counter": "count", "histogram": "observe", "gauge": "gauge"}[METRICS[name][0]]


def validate_emf(entry: dict) -> None:
    """Raises AssertionError unless `entry` has the EMF specification's structure:
    ``_aws.Timestamp`` (epoch ms), ``CloudWatchMetrics`` directives each with a
    ``Namespace``, ``Dimensions`` (arrays of at most 30 keys, each a string member of the
    root) and ``Metrics`` (``Name``, a valid ``Unit``), each metric's value on the root."""
    units = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
             "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
             "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second",
             "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second",
             "Count/Second", "None"}
    aws = entry["_aws"]
    assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 1_500_000_000_000
    directives = aws["CloudWatchMetrics"]
    assert isinstance(directives, list) and directives
    for directive in directives:
        assert isinstance(directive["Namespace"], str) and 1 <= len(directive["Namespace"]) <= 1024
        assert isinstance(directive["Dimensions"], list)
        for dimension_set in directive["Dimensions"]:
            assert isinstance(dimension_set, list) and len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(entry.get(name), str) and entry[name], f"dimension {name} has no string value"
        assert isinstance(directive["Metrics"], list) and 1 <= len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert isinstance(metric["Name"], str) and 1 <= len(metric["Name"]) <= 1024
            assert metric.get("Unit", "None") in units
            value = entry[metric["Name"]]
            assert isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_emf(lines: Iterable[str]) -> Totals:
    totals: Totals = Counter()
    for line in lines:
        if '"_aws"' not in line:
            continue
        entry = json.loads(line)
        validate_emf(entry)
        [directive] = entry["_aws"]["CloudWatchMetrics"]
        dims = {name: entry[name] for name in directive["Dimensions"][0]}
        for metric in directive["Metrics"]:
            _add(totals, _kind(metric["Name"]), metric["Name"], entry[metric["Name"]], dims)
    return totals


def parse_l2met(lines: Iterable[str]) -> Totals:
    kinds = {"count#": "count", "measure#": "observe", "sample#": "gauge"}
    totals: Totals = Counter()
    for line in lines:
        fields = shlex.split(line)
        metric = [f for f in fields if f.startswith(tuple(kinds))]
        if not metric:
            continue
        [field] = metric
        prefix = field[: field.index("#") + 1]
        full, raw = field[len(prefix):].split("=", 1)
        name = full.split(".", 1)[0]
        dims = dict(f.split("=", 1) for f in fields if "=" in f and "#" not in f.split("=", 1)[0] and not f.startswith("source="))
        _add(totals, kinds[prefix], name, float(raw.rstrip("s")), dims)
    return totals


def parse_json_log(lines: Iterable[str]) -> Totals:
    totals: Totals = Counter()
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("message") != "metric":
            continue
        dims = {k: v for k, v in entry.items() if k not in ("severity", "message", "metric", "kind", "value", "time")}
        _add(totals, entry["kind"], entry["metric"], entry["value"], dims)
    return totals


def parse_custom_dimensions(records: Iterable[Mapping]) -> Totals:
    totals: Totals = Counter()
    for fields in records:
        dims = {k: v for k, v in fields.items() if k not in ("metric", "kind", "value")}
        _add(totals, fields["kind"], fields["metric"], fields["value"], dims)
    return totals


def parse_prometheus(text: str) -> Totals:
    """With `prometheus_client`'s own parser: counters' ``_total`` samples, histograms'
    ``_count`` samples."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Totals = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.type == "counter" and sample.name.endswith("_total"):
                _add(totals, "count", sample.name, sample.value, sample.labels)
            elif family.type == "histogram" and sample.name.endswith("_count"):
                name = sample.name[: -len("_count")]
                totals[(name, frozenset(sample.labels.items()))] += sample.value
    return totals
