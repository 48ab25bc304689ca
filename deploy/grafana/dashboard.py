"""keel's Grafana dashboard as code (grafanalib). `make dashboards` writes deploy/grafana/keel.json;
`make test` checks that the committed JSON is what this file generates (--check), and the
Prometheus end-to-end test (tests/python/test_prometheus_e2e.py) runs every panel's query
against a real Prometheus after known traffic: no panel may refer to a metric keel does not export.

    python deploy/grafana/dashboard.py --write deploy/grafana/keel.json
    python deploy/grafana/dashboard.py --check deploy/grafana/keel.json

Rows: SLOs (availability and latency SLIs, error budget remaining, burn rates; the objectives
are deploy/prometheus/rules/keel.rules.yml's), RED per operation, caches, rate limits, auth,
retrieval, database, process. Every query reads the `$datasource` Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    BYTES_FORMAT,
    OPS_FORMAT,
    PERCENT_UNIT_FORMAT,
    SECONDS_FORMAT,
    Dashboard,
    DataSourceInput,
    GridPos,
    RowPanel,
    Stat,
    Target,
    Template,
    Templating,
    TimeSeries,
)

DS = "${datasource}"
RATE = "$__rate_interval"

# The objectives (keep in step with deploy/prometheus/rules/keel.rules.yml).
AVAILABILITY_BUDGET = 0.001
LATENCY_BUDGET = 0.01


def target(expr: str, legend: str = "", ref: str = "A") -> Target:
    return Target(expr=expr, legendFormat=legend, refId=ref, datasource=DS)


class Layout:
    """Places panels left to right, 24 columns wide, rows of a fixed height."""

    def __init__(self) -> None:
        self.y = 0
        self.x = 0
        self.panels: list = []

    def row(self, title: str) -> None:
        if self.x:
            self.y += 8
            self.x = 0
        self.panels.append(RowPanel(title=title, gridPos=GridPos(h=1, w=24, x=0, y=self.y)))
        self.y += 1

    def add(self, panel_type, width: int, title: str, targets: list[Target], **kw) -> None:
        if self.x + width > 24:
            self.y += 8
            self.x = 0
        self.panels.append(
            panel_type(
                title=title,
                dataSource=DS,
                targets=targets,
                gridPos=GridPos(h=8, w=width, x=self.x, y=self.y),
                **kw,
            )
        )
        self.x += width


def build() -> Dashboard:
    p = Layout()

    p.row("SLOs (30 days: availability 99.9%, latency 99% under 250 ms)")
    p.add(
        Stat,
        6,
        "Availability SLI (1h)",
        [target("1 - keel:sli_errors:ratio_rate1h")],
        format=PERCENT_UNIT_FORMAT,
        decimals=3,
    )
    p.add(
        Stat,
        6,
        "Latency SLI (1h, share under 250 ms)",
        [target("1 - keel:sli_slow:ratio_rate1h")],
        format=PERCENT_UNIT_FORMAT,
        decimals=3,
    )
    p.add(
        Stat,
        6,
        "Error budget remaining (30d)",
        [
            target(
                '1 - (sum(increase(keel_operations_total{outcome="error"}[30d]))'
                " / sum(increase(keel_operations_total[30d])))"
                f" / {AVAILABILITY_BUDGET}",
                "availability",
                "A",
            ),
            target(
                '1 - (1 - sum(increase(keel_operation_duration_seconds_bucket{le="0.25"}[30d]))'
                " / sum(increase(keel_operation_duration_seconds_count[30d])))"
                f" / {LATENCY_BUDGET}",
                "latency",
                "B",
            ),
        ],
        format=PERCENT_UNIT_FORMAT,
        decimals=1,
    )
    p.add(
        TimeSeries,
        6,
        "Burn rate (1 = budget spent in exactly 30 days)",
        [
            target(f"keel:sli_errors:ratio_rate1h / {AVAILABILITY_BUDGET}", "availability 1h", "A"),
            target(f"keel:sli_errors:ratio_rate6h / {AVAILABILITY_BUDGET}", "availability 6h", "B"),
            target(f"keel:sli_slow:ratio_rate1h / {LATENCY_BUDGET}", "latency 1h", "C"),
            target(f"keel:sli_slow:ratio_rate6h / {LATENCY_BUDGET}", "latency 6h", "D"),
        ],
    )

    p.row("Operations (rate, errors, duration)")
    p.add(
        TimeSeries,
        8,
        "Rate by operation",
        [target(f"sum by (operation) (rate(keel_operations_total[{RATE}]))", "{{operation}}")],
        unit=OPS_FORMAT,
    )
    p.add(
        TimeSeries,
        8,
        "Errors and refusals by operation",
        [
            target(
                "sum by (operation, outcome) "
                f'(rate(keel_operations_total{{outcome!="ok"}}[{RATE}]))',
                "{{operation}} {{outcome}}",
            )
        ],
        unit=OPS_FORMAT,
    )
    p.add(
        TimeSeries,
        8,
        "Duration p99 by operation",
        [
            target(
                "histogram_quantile(0.99, sum by (le, operation) "
                f"(rate(keel_operation_duration_seconds_bucket[{RATE}])))",
                "{{operation}}",
            )
        ],
        unit=SECONDS_FORMAT,
    )

    p.row("Caches and rate limits")
    p.add(
        TimeSeries,
        8,
        "Cache hit ratio",
        [
            target(
                f"sum by (cache) (rate(keel_cache_hits_total[{RATE}])) / (sum by (cache) "
                f"(rate(keel_cache_hits_total[{RATE}])) + sum by (cache) "
                f"(rate(keel_cache_misses_total[{RATE}])))",
                "{{cache}}",
            )
        ],
        unit=PERCENT_UNIT_FORMAT,
    )
    p.add(
        TimeSeries,
        8,
        "Cache entries and evictions",
        [
            target("sum by (cache) (keel_cache_entries)", "{{cache}} entries", "A"),
            target(
                f"sum by (cache) (rate(keel_cache_evictions_total[{RATE}]))",
                "{{cache}} evictions/s",
                "B",
            ),
        ],
    )
    p.add(
        TimeSeries,
        8,
        "Rate-limit denials by limiter",
        [
            target(
                "sum by (limiter) "
                f'(rate(keel_ratelimit_decisions_total{{decision="denied"}}[{RATE}]))',
                "{{limiter}}",
            )
        ],
        unit=OPS_FORMAT,
    )

    p.row("Auth, retrieval, database")
    p.add(
        TimeSeries,
        8,
        "Auth refusals by reason",
        [
            target(
                f'sum by (reason) (rate(keel_auth_verifications_total{{outcome!="ok"}}[{RATE}]))',
                "{{reason}}",
            )
        ],
        unit=OPS_FORMAT,
    )
    p.add(
        TimeSeries,
        8,
        "Retrieval latency by stage (p50, p95, p99)",
        [
            target(
                f"histogram_quantile({q}, sum by (le, stage) "
                f"(rate(keel_retrieval_stage_duration_seconds_bucket[{RATE}])))",
                f"{{{{stage}}}} p{int(q * 100)}",
                ref,
            )
            for q, ref in [(0.5, "A"), (0.95, "B"), (0.99, "C")]
        ],
        unit=SECONDS_FORMAT,
    )
    p.add(
        TimeSeries,
        8,
        "Database: pool wait p99, busy retries and failures",
        [
            target(
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(keel_db_pool_wait_seconds_bucket[{RATE}])))",
                "pool wait p99 (s)",
                "A",
            ),
            target(f"sum(rate(keel_db_busy_retries_total[{RATE}]))", "busy retries/s", "B"),
            target(f"sum(rate(keel_db_busy_failures_total[{RATE}]))", "busy failures/s", "C"),
        ],
    )

    p.row("Business and process")
    p.add(
        TimeSeries,
        8,
        "Conversations, messages, retrieval queries, reranks",
        [
            target(f"sum(rate(keel_conversations_started_total[{RATE}]))", "conversations/s", "A"),
            target(f"sum(rate(keel_messages_stored_total[{RATE}]))", "messages/s", "B"),
            target(
                f"sum by (retriever) (rate(keel_retrieval_queries_total[{RATE}]))",
                "{{retriever}} queries/s",
                "C",
            ),
            target(f"sum(rate(keel_reranks_total[{RATE}]))", "reranks/s", "D"),
        ],
        unit=OPS_FORMAT,
    )
    p.add(
        TimeSeries,
        8,
        "Process CPU (cores)",
        [target(f"rate(process_cpu_seconds_total[{RATE}])", "{{instance}}")],
    )
    p.add(
        TimeSeries,
        8,
        "Process resident memory",
        [target("process_resident_memory_bytes", "{{instance}}")],
        unit=BYTES_FORMAT,
    )

    return Dashboard(
        title="keel",
        uid="keel-overview",
        description="keel's operations, caches, rate limits, auth, retrieval, database and SLOs",
        tags=["keel"],
        timezone="utc",
        panels=p.panels,
        inputs=[
            DataSourceInput(
                name="DS_PROMETHEUS",
                label="Prometheus",
                pluginId="prometheus",
                pluginName="Prometheus",
            )
        ],
        templating=Templating(
            list=[
                Template(
                    name="datasource",
                    label="Prometheus",
                    query="prometheus",
                    type="datasource",
                    default="Prometheus",
                )
            ]
        ),
    ).auto_panel_ids()


def render() -> str:
    data = json.loads(json.dumps(build().to_json_data(), cls=DashboardEncoder))
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of a dashboard JSON."""
    return [
        (panel["title"], t["expr"])
        for panel in dashboard["panels"]
        for t in panel.get("targets", [])
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="PATH")
    group.add_argument("--check", metavar="PATH")
    args = parser.parse_args()
    text = render()
    if args.write:
        with open(args.write, "w") as f:
            f.write(text)
        return 0
    with open(args.check) as f:
        if f.read() != text:
            print(
                f"{args.check} differs from what deploy/grafana/dashboard.py generates:"
                " run `make dashboards`",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
