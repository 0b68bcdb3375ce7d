"""Checks infra/grafana/herald-dashboard.json: valid JSON, a `${DS_PROMETHEUS}` datasource input,
every panel with at least one query, and every metric name a query uses is one the server exports
(infra/grafana/metric-names.txt, which server/tests/it/metrics.rs compares with a real scrape, so
neither list can rot). A histogram's `_bucket`, `_sum` and `_count` series count as its name.

    python3 infra/validate/check_grafana.py              check the committed dashboard
    python3 infra/validate/check_grafana.py --self-test  also check that broken copies are caught

Standard library only.
"""

import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra/grafana/herald-dashboard.json"
NAMES = ROOT / "infra/grafana/metric-names.txt"
METRIC = re.compile(r"\bherald_[a-z0-9_]+\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def exported_names():
    return {line.split()[0] for line in NAMES.read_text().splitlines() if line.strip()}


def problems(dashboard, names):
    found = []
    inputs = [i.get("name") for i in dashboard.get("__inputs", [])]
    if "DS_PROMETHEUS" not in inputs:
        found.append("no DS_PROMETHEUS datasource input")
    panels = dashboard.get("panels") or []
    if not panels:
        found.append("no panels")
    for panel in panels:
        title = panel.get("title", "?")
        targets = panel.get("targets") or []
        if not targets:
            found.append(f"panel {title!r} has no query")
        for target in targets:
            if target.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
                found.append(f"panel {title!r} does not query ${{DS_PROMETHEUS}}")
            for used in METRIC.findall(target.get("expr", "")):
                base = used
                for suffix in HISTOGRAM_SUFFIXES:
                    if used.endswith(suffix) and used[: -len(suffix)] in names:
                        base = used[: -len(suffix)]
                if base not in names:
                    found.append(f"panel {title!r} uses {used}, which the server does not export")
    return found


def main():
    names = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    found = problems(dashboard, names)
    for problem in found:
        print(f"herald-dashboard.json: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"ok: {DASHBOARD.relative_to(ROOT)} ({len(dashboard['panels'])} panels, names from {NAMES.name})")
    if "--self-test" in sys.argv[1:]:
        breakages = []
        unknown = copy.deepcopy(dashboard)
        unknown["panels"][0]["targets"][0]["expr"] = "rate(herald_no_such_series_total[5m])"
        breakages.append(("an unknown metric name", unknown))
        no_input = copy.deepcopy(dashboard)
        no_input["__inputs"] = []
        breakages.append(("no datasource input", no_input))
        empty = copy.deepcopy(dashboard)
        empty["panels"][1]["targets"] = []
        breakages.append(("a panel without a query", empty))
        for what, broken in breakages:
            if not problems(broken, names):
                print(f"self-test: {what} was not caught", file=sys.stderr)
                return 1
        print(f"ok: {len(breakages)} broken copies caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
