"""`python -m bench`: start an embedded server, measure P1, P3, P4, P5 and P6, print the table."""

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench import measurements, redemption, ttft
from bench.report import Row, duration, ratio, render
from webapp.conversations import DEDUPE_WINDOW
from webapp.storage import connect
from webapp.storage.embedded import EmbeddedRedis


def machine_facts(info: dict) -> str:
    """nproc, Python and server versions, for the header line."""
    server = info.get("server_name", "redis")
    version = info.get(f"{server}_version", info["redis_version"])
    return (
        f"nproc {os.cpu_count()}, Python {platform.python_version()}, "
        f"{server} {version} (redis_version {info['redis_version']})"
    )


def p1_rows(result: measurements.AppendCostResult) -> list[Row]:
    """P1 and its naive-store baseline."""
    app, blob = result.app, result.blob
    return [
        Row(
            "P1",
            f"append cost at {measurements.LARGE:,} vs {measurements.SMALL} messages "
            "(append_message_and_touch)",
            duration(app.large),
            duration(app.small),
            ratio(app.large / app.small),
            "≤ 1.2",
            app.large / app.small <= 1.2,
        ),
        Row(
            "P1 baseline",
            "same, naive store: history as one JSON blob, GET+loads+dumps+SET",
            duration(blob.large),
            duration(blob.small),
            ratio(blob.large / blob.small),
        ),
    ]


def p1_notes(result: measurements.AppendCostResult) -> list[str]:
    """How P1 was sampled, its spread over rounds, and the app store past the dedupe window."""
    rounds, samples = measurements.P1_ROUNDS, measurements.P1_SAMPLES[0]
    past = result.app_past_window

    def spread(costs: measurements.AppendCosts) -> str:
        return f"{ratio(min(costs.round_ratios))}–{ratio(max(costs.round_ratios))}"

    return [
        f"P1: medians of single interleaved appends, {rounds} rounds × {samples} per size "
        f"(naive store at {measurements.LARGE:,}: {rounds} × {measurements.P1_BLOB_SAMPLES[1]}); "
        f"per-round ratios {spread(result.app)}, naive {spread(result.blob)}.",
        f"P1 diagnostic: app store at {measurements.LARGE:,} vs {measurements.PAST_WINDOW} "
        f"messages, where the {DEDUPE_WINDOW}-message dedupe scan "
        f"is full at both: {ratio(past.large / past.small)} "
        f"({duration(past.large)} vs {duration(past.small)}).",
    ]


def p3_rows(memory: measurements.MemoryUse) -> list[Row]:
    """P3 and its plain-list baseline."""
    payload = memory.payload / memory.messages
    stored = (memory.message_list + sum(memory.per_conversation.values())) / memory.messages
    plain = memory.plain_list / memory.messages
    return [
        Row(
            "P3",
            "Redis bytes per message (list + per-conversation keys amortised) / JSON bytes",
            f"{stored:.1f} B",
            f"{payload:.1f} B",
            ratio(stored / payload),
            "≤ 1.15",
            stored / payload <= 1.15,
        ),
        Row(
            "P3 baseline",
            "same, plain Redis list of the JSON strings",
            f"{plain:.1f} B",
            f"{payload:.1f} B",
            ratio(plain / payload),
        ),
    ]


def p3_note(memory: measurements.MemoryUse) -> str:
    """What the P3 bytes are made of."""
    return (
        f"P3: {memory.messages:,} messages; MEMORY USAGE SAMPLES 0: list {memory.message_list:,} B "
        f"({memory.encoding}, scales with messages); once per conversation: "
        + ", ".join(f"{name} {size:,} B" for name, size in memory.per_conversation.items())
        + f"; JSON payload {memory.payload:,} B."
    )


def p4_row(first: ttft.FirstToken) -> Row:
    """P4: the app's time to first token against the SDK's own, on the same fake."""
    app = statistics.median(sample.net for sample in first.app)
    sdk = statistics.median(sample.net for sample in first.sdk)
    added = app - sdk
    return Row(
        "P4",
        "time to first token, app (POST → SSE frame) vs SDK direct, same fake model",
        duration(app),
        duration(sdk),
        f"{added * 1e3:+.2f} ms",
        "≤ 5 ms added (median)",
        added <= 0.005,
    )


def p4_notes(first: ttft.FirstToken) -> list[str]:
    """How P4 was timed, its p90, where the added time goes, and the unheld diagnostic."""

    def med(values) -> str:
        return duration(statistics.median(values))

    def p90(values) -> str:
        return duration(ttft.p90(list(values)))

    app, sdk, unheld = first.app, first.sdk, first.unheld
    return [
        f"P4: `resume-chat serve --workers {ttft.WORKERS} --threads {ttft.THREADS}` "
        "and the anthropic SDK, against "
        "one fake Messages API in this process (tests/fake_anthropic.py, token_delay 0, "
        "TCP_NODELAY set by the bench), medians of "
        f"{ttft.P4_SAMPLES} interleaved samples each after {ttft.P4_WARM_UP} warm-up rounds; "
        "a new guest each round, as the app limits model calls per person and minute.",
        "P4 method: each side is (request sent → fake received it) + (fake wrote its first "
        "delta → client got the text); the fake's own time between the two is left out of both. "
        "App: POST / (redirect not followed), GET the page for data-events, open the SSE "
        "stream with after=0-0; the fake holds its first delta until the app's XREAD is "
        "blocked, as a real model's first token comes after the page has loaded. SDK: "
        f"messages.stream(), the first delta held {ttft.SDK_HOLD_SECONDS * 1e3:g} ms.",
        f"P4 p90: app {p90(s.net for s in app)}, SDK {p90(s.net for s in sdk)}. Split: "
        f"request to the fake, app {med(s.upstream for s in app)} (POST handled, START_RUN, "
        f"run thread, its SDK call) vs SDK {med(s.upstream for s in sdk)}; "
        f"first delta to the client, app {med(s.downstream for s in app)} vs SDK "
        f"{med(s.downstream for s in sdk)}, of which to a direct XREAD on the run's events "
        f"{med(s.to_redis for s in app)}.",
        f"P4 diagnostic, nothing held (first delta at once): SDK call → first text "
        f"{med(first.sdk_unheld)}; app POST → first text over SSE after loading the page "
        f"{med(s.total for s in unheld)} (p90 {p90(s.total for s in unheld)}: POST "
        f"{med(s.post for s in unheld)}, page {med(s.page for s in unheld)}, SSE "
        f"{med(s.sse for s in unheld)}); the page itself already showed the first token in "
        f"{sum(s.page_had_text for s in unheld)} of {len(unheld)}.",
    ]


def p6_row(trips: measurements.RoundTrips) -> Row:
    """P6: counted writes per append."""
    per_append = trips.writes / trips.appends
    return Row(
        "P6",
        "round trips per append (message stored, every TTL refreshed)",
        f"{per_append:.2f}",
        goal="= 1",
        passed=per_append == 1,
    )


def p6_notes(trips: measurements.RoundTrips) -> list[str]:
    """The warm-up call and the server's own count of commands."""
    per_append = sorted(trips.server_calls.items(), key=lambda item: (-item[1], item[0]))
    return [
        f"P6: {trips.writes} connection writes for {trips.appends} appends "
        "(Connection.send_packed_command calls; a pipeline is one write).",
        f"P6 warm-up, first append on a fresh connection after SCRIPT FLUSH: "
        f"{len(trips.warm_up)} round trips ({', '.join(trips.warm_up)}).",
        "P6 server side (INFO commandstats, per append, including commands run by the script): "
        + ", ".join(f"{name} {calls / trips.appends:g}" for name, calls in per_append)
        + ".",
    ]


def main() -> None:
    """Run every measurement on a fresh embedded server and print the table."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resume-chat-bench-") as data_dir:
        server = EmbeddedRedis(data_dir)
        try:
            url = server.start()
            r = connect(url)
            facts = machine_facts(r.info("server"))
            append_cost = measurements.append_cost(r)
            memory = measurements.memory_per_message(r)
            trips = measurements.round_trips_per_append(r, url)
            r.close()
            first = ttft.first_token(url, Path(data_dir) / "app")
            redeeming = redemption.redemption_latency(url, Path(data_dir) / "p5")
        finally:
            server.stop()
    print(f"Resume Chat benchmark: {facts}")
    print("Ratios come from one run on a noisy shared machine; both sides of each ratio are")
    print("measured in that run on the same server.\n")
    print(
        render(
            [
                *p1_rows(append_cost),
                *p3_rows(memory),
                p4_row(first),
                redemption.p5_row(redeeming),
                p6_row(trips),
            ]
        )
    )
    print()
    for note in [
        *p1_notes(append_cost),
        p3_note(memory),
        *p4_notes(first),
        *redemption.p5_notes(redeeming),
        *p6_notes(trips),
    ]:
        print(note)
    print(f"\nFinished in {time.perf_counter() - started:.1f} s.")


if __name__ == "__main__":
    main()
