"""Pipeline health in Prometheus' text format: a collector that reads the database when scraped.

Every figure comes from ``campaigns.selectors.pipeline_health.pipeline_health`` at scrape time,
so a scrape of any server process sees the same numbers as the admin page and
``pipeline_status`` (no in-process counters, which would each see only their own process).
Metric names and labels are documented in the README (*Pipeline health*).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..selectors.pipeline_health import PipelineHealth, pipeline_health

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _seconds(moment) -> float:
    return moment.timestamp()


class PipelineHealthCollector(Collector):
    """Yield the pipeline's figures as Prometheus metric families, read afresh on every collect."""

    def __init__(self, read: Callable[[], PipelineHealth] = pipeline_health) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        health = self.read()
        yield from _events(health)
        yield from _issuance(health)
        yield from _webhooks(health)
        yield from _models(health)
        yield from _live_path(health)


def _events(health: PipelineHealth) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "crossmkt_events_accepted", "Behaviour events accepted and stored, per partner.", labels=["partner"]
    )
    for partner, count in health.events_by_partner.items():
        events.add_metric([partner], count)
    yield events
    yield GaugeMetricFamily(
        "crossmkt_events_counted_timestamp_seconds",
        "When the events were counted (the count is cached for PIPELINE_EVENTS_COUNT_SECONDS).",
        value=_seconds(health.events_counted_at),
    )


def _issuance(health: PipelineHealth) -> Iterator[Metric]:
    offers = CounterMetricFamily("crossmkt_offers_issued", "Offers issued, per campaign.", labels=["campaign"])
    for campaign, count in health.offers_issued_by_campaign.items():
        offers.add_metric([campaign], count)
    yield offers
    grants = GaugeMetricFamily(
        "crossmkt_deal_grants",
        "Deal grants per status; compensated ones failed to reach their partner for good.",
        labels=["status"],
    )
    for status, count in health.grants_by_status.items():
        grants.add_metric([status], count)
    yield grants


def _webhooks(health: PipelineHealth) -> Iterator[Metric]:
    deliveries = GaugeMetricFamily(
        "crossmkt_webhook_deliveries", "Webhook deliveries (the outbox) per status.", labels=["status"]
    )
    for status, count in health.webhooks_by_status.items():
        deliveries.add_metric([status], count)
    yield deliveries
    open_deliveries = GaugeMetricFamily(
        "crossmkt_webhook_deliveries_open",
        "Webhook deliveries still pending or failed for good, per event type.",
        labels=["event", "status"],
    )
    for (event, status), count in sorted(health.webhooks_open_by_event.items()):
        open_deliveries.add_metric([event, status], count)
    yield open_deliveries
    oldest = health.oldest_pending_webhook_at
    yield GaugeMetricFamily(
        "crossmkt_webhook_oldest_pending_age_seconds",
        "Age of the oldest webhook delivery still pending (0 when none is).",
        value=(health.measured_at - oldest).total_seconds() if oldest else 0.0,
    )


def _models(health: PipelineHealth) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "crossmkt_model_active_runs", "Model kinds with an active run.", value=health.active_model_runs
    )
    active = GaugeMetricFamily("crossmkt_model_active_version", "Version of each model's active run.", labels=["model"])
    trained = GaugeMetricFamily(
        "crossmkt_model_last_trained_timestamp_seconds",
        "When each model was last trained, with that run's version and the quality gate's decision.",
        labels=["model", "version", "gate"],
    )
    scored = GaugeMetricFamily(
        "crossmkt_model_last_scored_timestamp_seconds",
        "When each model last scored users, with the version of the run that scored them.",
        labels=["model", "version"],
    )
    for model in health.models:
        if model.active_version is not None:
            active.add_metric([model.model], model.active_version)
        if model.last_trained_at is not None:
            trained.add_metric(
                [model.model, str(model.last_trained_version), model.last_gate.get("decision", "")],
                _seconds(model.last_trained_at),
            )
        if model.last_scored_at is not None:
            scored.add_metric([model.model, str(model.last_scored_version)], _seconds(model.last_scored_at))
    yield active
    yield trained
    yield scored


def _live_path(health: PipelineHealth) -> Iterator[Metric]:
    """Yield the live path's backlog and latency where the selector measures them (see its extension point)."""
    if health.pending is not None:
        yield GaugeMetricFamily(
            "crossmkt_live_pending_users",
            "Users touched by accepted events and not yet evaluated.",
            value=health.pending.users,
        )
        yield GaugeMetricFamily(
            "crossmkt_live_oldest_pending_age_seconds",
            "Age of the oldest pending user (0 when none is).",
            value=health.pending.oldest_age_seconds or 0.0,
        )
    if health.offer_latency is not None:
        latency = health.offer_latency
        yield HistogramMetricFamily(
            "crossmkt_event_to_offer_latency_seconds",
            "Seconds from the event that made a continuous campaign's rule true to the offer it issued.",
            buckets=[
                ("+Inf" if bound == float("inf") else repr(float(bound)), count)
                for bound, count in sorted(latency.buckets.items())
            ],
            sum_value=latency.sum_seconds,
        )


def pipeline_metrics_text(read: Callable[[], PipelineHealth] = pipeline_health) -> bytes:
    """Return the pipeline's figures in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineHealthCollector(read))
    return generate_latest(registry)
