"""Reading /metrics the way Prometheus does: the exposition parsed by prometheus_client.parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: {(sample name, frozenset of label pairs): value}."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client, **extra) -> dict[tuple[str, frozenset], float]:
    """GET /metrics as an allowed client (the test client's 127.0.0.1 with the loopback network allowed)."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def value(samples: dict, name: str, **labels) -> float:
    """A sample's value; 0 for a series not exported yet (a counter nobody incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: dict, after: dict, name: str, **labels) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
