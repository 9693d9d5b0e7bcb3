"""`python -m bench`: start an embedded server, measure P1, P3 and P6, print the table."""

import os
import platform
import tempfile
import time

from bench import measurements
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
        finally:
            server.stop()
    print(f"Resume Chat storage benchmark: {facts}")
    print("Ratios come from one run on a noisy shared machine; both sides of each ratio are")
    print("measured in that run on the same server.\n")
    print(render([*p1_rows(append_cost), *p3_rows(memory), p6_row(trips)]))
    print()
    for note in [*p1_notes(append_cost), p3_note(memory), *p6_notes(trips)]:
        print(note)
    print(f"\nFinished in {time.perf_counter() - started:.1f} s.")


if __name__ == "__main__":
    main()
