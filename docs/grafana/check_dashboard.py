#!/usr/bin/env python3
"""Check the qiflow Grafana dashboard (docs/grafana/qiflow-dashboard.json).

Usage:
    python3 docs/grafana/check_dashboard.py [DASHBOARD] [--names FILE] [--print-queries]
                                            [--job JOB]

Checks, each reported with where it is (panel id and title, target refId):
  - the file is JSON with the import header: an `__inputs` entry `DS_PROMETHEUS` of type
    datasource/prometheus, and `__requires`;
  - panel ids are unique integers;
  - every gridPos lies in the 24-column grid and no two panels' rectangles overlap;
  - every non-row panel has targets, and every target has a unique `refId`, an `expr`, a
    `legendFormat` and the `${DS_PROMETHEUS}` Prometheus datasource;
  - with `--names FILE` (one name per line, `#` comments), every metric name used (a token
    starting with `http_server_` or `qiflow_`, outside string literals) is one of those names
    or its `_bucket`, `_sum` or `_count` series. Without it, names are not checked here:
    `qiflow-core/tests/ops_assets.rs` checks them against `qiflow_core::metrics::CATALOGUE`,
    the one list of qiflow's metrics;
  - the template variables `job`, `instance` and `route` come first, in that order, `instance`
    and `route` multi-valued with "All" as `.*`;
  - a light PromQL lint: brackets balance, every series selector filters on
    `job="$job", instance=~"$instance"` (and `route=~"$route"` for `http_server_*`), range
    selectors use `$__rate_interval` (or `$__range`), `by (...)` lists are label names, and
    `histogram_quantile` takes a quantile in [0, 1] over `_bucket` series aggregated by `le`.

With `--print-queries`, once every check passes, prints each panel query on one line with the
Grafana variables replaced (`$job` by JOB, default `qiflow-quickstart`; `$instance` and `$route`
by `.*`; `$__rate_interval` by `1m`; `$__range` by `1h`), for sending to a live Prometheus's
/api/v1/query. Problems go to stderr. Exit status: 0 when all is well, 1 on any problem.
"""

import argparse
import json
import re
import sys
from pathlib import Path

DEFAULT_DASHBOARD = Path(__file__).resolve().parent / "qiflow-dashboard.json"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

EXPECTED_DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
GRID_WIDTH = 24
VARIABLES = ["job", "instance", "route"]
MULTI_VARIABLES = {"instance", "route"}
RANGES = {"$__rate_interval", "$__range"}

# Values used for --print-queries.
SUBSTITUTIONS = {
    "job": "qiflow-quickstart",
    "instance": ".*",
    "route": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
}

METRIC_TOKEN = re.compile(r"(?<![A-Za-z0-9_:])(?:http_server_|qiflow_)[A-Za-z0-9_:]*")
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
BY_CLAUSE = re.compile(r"\b(by|without)\s*\(([^)]*)\)")
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def blank_strings(expr):
    """Return expr with the inside of every string literal replaced by spaces (same length)."""
    return STRING_LITERAL.sub(lambda m: m.group(0)[0] + " " * (len(m.group(0)) - 2)
                              + m.group(0)[-1], expr)


def allowed_names(base_names):
    """The names and their histogram series (`_bucket`, `_sum`, `_count`)."""
    names = set(base_names)
    for name in base_names:
        names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def load_names(path):
    names = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def matching_paren(text, open_index):
    """Index of the bracket closing the one at open_index, or -1."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = []
    for i in range(open_index, len(text)):
        c = text[i]
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                return -1
            if not stack:
                return i
    return -1


def split_top_level_args(text):
    """Split the inside of a call on commas that are not nested in brackets."""
    args, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[start:i])
            start = i + 1
    args.append(text[start:])
    return [a.strip() for a in args]


def lint_promql(expr, allowed, problems, where):
    """Light checks of one PromQL expression; append problems."""
    bare = blank_strings(expr)

    # Brackets balance (outside string literals).
    stack = []
    pairs = {"(": ")", "[": "]", "{": "}"}
    for i, c in enumerate(bare):
        if c in pairs:
            stack.append((pairs[c], i))
        elif c in ")]}":
            if not stack or stack[-1][0] != c:
                problems.append(f"{where}: unbalanced '{c}' at column {i + 1}")
                return
            stack.pop()
    if stack:
        problems.append(f"{where}: '{stack[-1][0]}' missing for the bracket at column "
                        f"{stack[-1][1] + 1}")
        return

    # Metric names.
    for token in sorted(set(METRIC_TOKEN.findall(bare))):
        if allowed is not None and token not in allowed:
            problems.append(f"{where}: unknown metric name '{token}'")

    # Series selectors: every metric must be selected with braces that filter job and instance.
    selected = set()
    for m in SELECTOR.finditer(expr):
        name, matchers = m.group(1), m.group(2)
        if not METRIC_TOKEN.fullmatch(name):
            continue
        selected.add(m.start(1))
        if 'job="$job"' not in matchers:
            problems.append(f"{where}: selector of '{name}' lacks job=\"$job\"")
        if 'instance=~"$instance"' not in matchers:
            problems.append(f"{where}: selector of '{name}' lacks instance=~\"$instance\"")
        if name.startswith("http_server_") and 'route=~"$route"' not in matchers:
            problems.append(f"{where}: selector of '{name}' lacks route=~\"$route\"")
    for m in METRIC_TOKEN.finditer(bare):
        if m.start() not in selected:
            problems.append(f"{where}: '{m.group(0)}' is used without a {{job, instance}} "
                            "selector")

    # Range selectors.
    for m in re.finditer(r"\[([^\]]*)\]", bare):
        if m.group(1).strip() not in RANGES:
            problems.append(f"{where}: range [{m.group(1)}] should be [$__rate_interval]")

    # by / without clauses: label names only.
    for m in BY_CLAUSE.finditer(bare):
        labels = [label.strip() for label in m.group(2).split(",")]
        if not all(LABEL_NAME.match(label) for label in labels):
            problems.append(f"{where}: '{m.group(0)}' is not a list of label names")

    # histogram_quantile(q, <aggregation by (..., le)> of _bucket series).
    for m in re.finditer(r"\bhistogram_quantile\s*\(", bare):
        open_index = m.end() - 1
        close_index = matching_paren(bare, open_index)
        args = split_top_level_args(bare[open_index + 1:close_index])
        if len(args) != 2:
            problems.append(f"{where}: histogram_quantile takes 2 arguments, got {len(args)}")
            continue
        try:
            q = float(args[0])
            if not 0 <= q <= 1:
                problems.append(f"{where}: histogram_quantile quantile {q} is not in [0, 1]")
        except ValueError:
            problems.append(f"{where}: histogram_quantile quantile '{args[0]}' is not a number")
        if "_bucket" not in args[1]:
            problems.append(f"{where}: histogram_quantile is not over _bucket series")
        clauses = BY_CLAUSE.findall(args[1])
        if not clauses:
            problems.append(f"{where}: histogram_quantile input is not aggregated 'by (..., le)'")
        for kind, labels in clauses:
            names = {label.strip() for label in labels.split(",")}
            if (kind == "by") != ("le" in names):
                problems.append(f"{where}: histogram_quantile input '{kind} ({labels})' "
                                "must keep le")


def iter_panels(panels):
    """Yield every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        for nested in panel.get("panels", []) or []:
            yield nested


def describe(panel):
    return f"panel {panel.get('id')!r} '{panel.get('title', '')}'"


def check_gridpos(panels, problems):
    rects = []
    for panel in panels:
        gp = panel.get("gridPos")
        where = describe(panel)
        if not isinstance(gp, dict):
            problems.append(f"{where}: no gridPos")
            continue
        values = [gp.get(k) for k in ("x", "y", "w", "h")]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            problems.append(f"{where}: gridPos needs integer x, y, w, h: {gp}")
            continue
        x, y, w, h = values
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > GRID_WIDTH:
            problems.append(f"{where}: gridPos {gp} is outside the {GRID_WIDTH}-wide grid")
        rects.append((panel, x, y, w, h))
    for i, (pa, xa, ya, wa, ha) in enumerate(rects):
        for pb, xb, yb, wb, hb in rects[i + 1:]:
            if xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha:
                problems.append(f"{describe(pa)} overlaps {describe(pb)}: "
                                f"{pa['gridPos']} and {pb['gridPos']}")


def check_dashboard(dashboard, allowed):
    """Return (problems, queries) for a loaded dashboard."""
    problems, queries = [], []

    inputs = dashboard.get("__inputs")
    if not isinstance(inputs, list) or not any(
            i.get("name") == "DS_PROMETHEUS" and i.get("type") == "datasource"
            and i.get("pluginId") == "prometheus" for i in inputs if isinstance(i, dict)):
        problems.append("dashboard: __inputs lacks the DS_PROMETHEUS prometheus datasource input")
    if not isinstance(dashboard.get("__requires"), list) or not dashboard["__requires"]:
        problems.append("dashboard: __requires is missing")

    panels = dashboard.get("panels")
    if not isinstance(panels, list) or not panels:
        problems.append("dashboard: no panels")
        return problems, queries

    seen = {}
    for panel in iter_panels(panels):
        pid = panel.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            problems.append(f"{describe(panel)}: id is not an integer")
        elif pid in seen:
            problems.append(f"{describe(panel)}: id {pid} already used by {describe(seen[pid])}")
        else:
            seen[pid] = panel

    # Collapsed rows keep their children's positions for when they open: check the top level.
    check_gridpos(panels, problems)

    for panel in iter_panels(panels):
        if panel.get("type") == "row":
            continue
        where = describe(panel)
        if panel.get("datasource") != EXPECTED_DATASOURCE:
            problems.append(f"{where}: datasource is {panel.get('datasource')!r}, "
                            f"expected {EXPECTED_DATASOURCE}")
        targets = panel.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{where}: no targets")
            continue
        ref_ids = set()
        for index, target in enumerate(targets):
            ref = target.get("refId")
            twhere = f"{where} target {ref or '#' + str(index)}"
            if not isinstance(ref, str) or not ref:
                problems.append(f"{twhere}: no refId")
            elif ref in ref_ids:
                problems.append(f"{twhere}: refId repeated")
            else:
                ref_ids.add(ref)
            if target.get("datasource") != EXPECTED_DATASOURCE:
                problems.append(f"{twhere}: datasource is {target.get('datasource')!r}, "
                                f"expected {EXPECTED_DATASOURCE}")
            if "legendFormat" not in target:
                problems.append(f"{twhere}: no legendFormat")
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                problems.append(f"{twhere}: no expr")
                continue
            lint_promql(expr, allowed, problems, twhere)
            queries.append(expr)

    variables = dashboard.get("templating", {}).get("list", [])
    names = [v.get("name") for v in variables]
    if names[:len(VARIABLES)] != VARIABLES:
        problems.append(f"templating: variables are {names}, expected {VARIABLES} first")
    for var in variables:
        name = var.get("name")
        where = f"variable '{name}'"
        if name not in VARIABLES:
            continue
        if var.get("datasource") != EXPECTED_DATASOURCE:
            problems.append(f"{where}: datasource is {var.get('datasource')!r}")
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if not isinstance(query, str) or not query.startswith("label_values("):
            problems.append(f"{where}: query {query!r} is not a label_values(...) query")
            continue
        for token in sorted(set(METRIC_TOKEN.findall(blank_strings(query)))):
            if allowed is not None and token not in allowed:
                problems.append(f"{where}: unknown metric name '{token}'")
        multi = name in MULTI_VARIABLES
        if bool(var.get("multi")) != multi:
            problems.append(f"{where}: multi should be {multi}")
        if multi and (not var.get("includeAll") or var.get("allValue") != ".*"):
            problems.append(f"{where}: needs includeAll with allValue '.*'")

    return problems, queries


def substitute(expr, values):
    """Replace the Grafana variables in values; leave others (such as ${1}) alone."""
    def replace(m):
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))
    return " ".join(GRAFANA_VARIABLE.sub(replace, expr).split())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("dashboard", nargs="?", default=str(DEFAULT_DASHBOARD),
                        help="dashboard JSON (default: qiflow-dashboard.json beside this script)")
    parser.add_argument("--names", metavar="FILE",
                        help="allowed metric names, one a line (default: no name check; "
                             "qiflow-core/tests/ops_assets.rs checks names against CATALOGUE)")
    parser.add_argument("--print-queries", action="store_true",
                        help="print every query with the variables substituted, one a line")
    parser.add_argument("--job", default=SUBSTITUTIONS["job"],
                        help="value of $job for --print-queries (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"{args.dashboard}: {e}", file=sys.stderr)
        return 1
    try:
        allowed = allowed_names(load_names(args.names)) if args.names else None
    except OSError as e:
        print(f"{args.names}: {e}", file=sys.stderr)
        return 1

    problems, queries = check_dashboard(dashboard, allowed)
    if problems:
        for problem in problems:
            print(f"{args.dashboard}: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1

    if args.print_queries:
        values = dict(SUBSTITUTIONS, job=args.job)
        for expr in queries:
            print(substitute(expr, values))
    else:
        panels = list(iter_panels(dashboard["panels"]))
        rows = sum(1 for p in panels if p.get("type") == "row")
        print(f"{args.dashboard}: OK: {len(panels)} panels ({rows} rows, "
              f"{len(panels) - rows} with queries), {len(queries)} queries, "
              f"{len(dashboard['templating']['list'])} variables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
