"""`python -m bench`: start an embedded server, measure P1 to P12, print the table."""

import statistics
import time

from bench import caching, growth, load, measurements, page, redemption, search, ttft, watchers
from bench.report import Row, duration, machine, ratio, render, server_version
from bench.server import embedded_server
from webapp.conversations import DEDUPE_WINDOW
from webapp.storage import connect


def machine_facts(info: dict) -> str:
    """The machine, Python, the server and the load generator, for the header line."""
    return f"{machine()}; {server_version(info)}; load generator {load.wrk_version()}"


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


P2_GOAL = 1.2


def _cpu(results: list[load.WrkResult]) -> float:
    """The workers' median CPU per request over rounds."""
    return statistics.median(result.cpu_per_request for result in results)


def p2_rows(rates: page.Throughput) -> list[Row]:
    """P2: the page's CPU in the workers against the bare page's, and both rates."""
    app_cpu, bare_cpu = _cpu(rates.app), _cpu(rates.bare)
    app, bare = rates.median_rate(rates.app), rates.median_rate(rates.bare)
    return [
        Row(
            "P2",
            f"conversation page ({page.MESSAGES} messages) as its owner, wrk "
            f"{page.P2_CONNECTIONS} connections, workers' CPU per page",
            duration(app_cpu),
            duration(bare_cpu),
            ratio(app_cpu / bare_cpu),
            f"≤ {P2_GOAL:g}",
            app_cpu / bare_cpu <= P2_GOAL,
        ),
        Row(
            "P2 rate",
            "same, requests/s, app vs bare (the median of the rounds' ratios)",
            f"{app:,.0f}/s",
            f"{bare:,.0f}/s",
            ratio(rates.ratio),
        ),
        Row(
            "P2 baseline",
            "bare Flask + Redis + Jinja2 page, same reads, same gunicorn settings",
            f"{bare:,.0f}/s",
        ),
    ]


def p2_notes(rates: page.Throughput) -> list[str]:
    """How P2 was run, each round, and the CPU each page costs."""

    rounds = ", ".join(
        f"{a.per_second:,.0f}/{b.per_second:,.0f} ({ratio(a.per_second / b.per_second)}; CPU "
        f"{duration(a.cpu_per_request)}/{duration(b.cpu_per_request)})"
        for a, b in zip(rates.app, rates.bare, strict=True)
    )
    app_cpu, bare_cpu = _cpu(rates.app), _cpu(rates.bare)
    return [
        f"P2: both under `gunicorn --workers {page.WORKERS} --threads {page.THREADS} "
        "--worker-class gthread` with an access log, on the bench's server at once; wrk "
        f"{page.P2_CONNECTIONS} connections, the owner's session cookie, {page.P2_ROUNDS} "
        f"interleaved rounds of {page.P2_SECONDS} s each after a {page.WARM_UP_SECONDS} s "
        f"warm-up; rates are medians, the ratio the median of the rounds' ratios. "
        "The bare page (bench/bare_page.py) reads meta, the messages, "
        "the run, the session and the draft, checks the owner in the same signed cookie, and "
        "renders them escaped: no Markdown, CSRF tokens or fork forms.",
        f"P2 rounds, app/bare requests/s (workers' CPU per page): {rounds}. Median CPU: app "
        f"{duration(app_cpu)}, bare {duration(bare_cpu)} (×{app_cpu / bare_cpu:.2f}); page "
        f"{rates.app_page_bytes:,} B vs {rates.bare_page_bytes:,} B. p99 under wrk: app "
        f"{duration(statistics.median(r.p99 for r in rates.app))}, bare "
        f"{duration(statistics.median(r.p99 for r in rates.bare))}.",
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


P4_GOAL = 3.0


def p4_row(first: ttft.FirstToken) -> Row:
    """P4: the time to first token the app adds to the SDK's own, on the same fake, against
    one bare Flask + Redis request in the same run."""
    app = statistics.median(sample.net for sample in first.app)
    sdk = statistics.median(sample.net for sample in first.sdk)
    bare = statistics.median(first.bare)
    added = app - sdk
    return Row(
        "P4",
        "time to first token added by the app (POST → SSE frame, minus the SDK direct, same "
        "fake model) vs one bare Flask + Redis request (GET /readyz)",
        f"{added * 1e3:+.2f} ms",
        duration(bare),
        ratio(added / bare),
        f"≤ {P4_GOAL:g}",
        added / bare <= P4_GOAL,
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
        f"P4 medians: app {med(s.net for s in app)}, SDK {med(s.net for s in sdk)}, GET /readyz "
        f"{med(first.bare)}; p90: app {p90(s.net for s in app)}, SDK {p90(s.net for s in sdk)}. "
        "Split: "
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


def p6_send_row(writes: int) -> Row:
    """P6 for the send path: counted writes per message sent."""
    per_send = writes / measurements.P6_SENDS
    return Row(
        "P6 send",
        "round trips per message sent (stored, every TTL refreshed, counted, its reply "
        "started: runs.start_run)",
        f"{per_send:.2f}",
        goal="= 1",
        passed=per_send == 1,
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


def p7_rows(weight: page.Weight) -> list[Row]:
    """P7 as transferred, and uncompressed."""
    return [
        Row(
            "P7",
            f"page weight, conversation page ({page.MESSAGES} messages), first load in "
            "Chromium, empty cache, bytes transferred",
            f"{weight.transferred / 1024:.1f} KB",
            goal="≤ 100 KB, no framework",
            passed=weight.transferred <= page.P7_GOAL_BYTES
            and weight.scripts_are_ours
            and weight.same_origin,
        ),
        Row(
            "P7 uncompressed",
            "same, the bodies as decoded (the app sends them uncompressed)",
            f"{weight.body / 1024:.1f} KB",
        ),
    ]


def p7_notes(weight: page.Weight, parts: dict[str, int]) -> list[str]:
    """What the first load fetched, what the HTML is made of, and whose the scripts are."""
    fetched = ", ".join(
        f"{resource.kind} {resource.url.split('/', 3)[-1] or '/'} {resource.body:,} B "
        f"({resource.transferred:,} B transferred)"
        for resource in weight.resources
    )
    scripts = [resource for resource in weight.resources if resource.kind == "script"]
    html = next(resource.body for resource in weight.resources if resource.kind == "document")
    return [
        f"P7: Chromium (/usr/bin/chromium, headless, Playwright) loads the page as its owner "
        f"with an empty cache until the network is idle; {len(weight.resources)} responses: "
        f"{fetched}. 1 KB = 1,024 B; transferred = response headers + body as sent.",
        "P7 HTML: "
        + ", ".join(f"{name} {size:,} B ({size / html:.0%})" for name, size in parts.items())
        + f". Gzipped (level 6) the whole load would be {weight.gzipped / 1024:.1f} KB, but "
        "the bench's messages repeat 15 sentences, so real text compresses less.",
        "P7 no framework: scripts "
        + (", ".join(s.url.split("/", 3)[-1] for s in scripts) or "none")
        + (
            ", byte for byte the project's own static/ files"
            if weight.scripts_are_ours
            else ", NOT all the project's own static/ files"
        )
        + ("; every response from the app's origin." if weight.same_origin else "; OTHER ORIGINS."),
    ]


def p10_row(result: caching.Caching) -> Row:
    """P10: the 20th turn's input tokens as billed, prompt caching on and off."""
    return Row(
        "P10",
        f"input tokens billed for turn {caching.TURNS} of a conversation, prompt caching "
        f"({caching.CACHE_TTL}) on vs off",
        f"{caching.billed_input(result.cached):,.0f}",
        f"{caching.billed_input(result.uncached):,.0f}",
        ratio(result.ratio),
        "≤ 0.2",
        result.ratio <= 0.2,
    )


def p10_note(result: caching.Caching) -> str:
    on, off = result.cached, result.uncached
    return (
        f"P10: the fake Messages API's usage of turn {caching.TURNS}, cached: "
        f"{on.input_tokens:,} input + {on.cache_write_tokens:,} written "
        f"(×{caching.WRITE_PRICE}) + {on.cache_read_tokens:,} read (×{caching.READ_PRICE}); "
        f"uncached: {off.input_tokens:,} input."
    )


def main() -> None:
    """Run every measurement on a fresh embedded server and print the table."""
    started = time.perf_counter()
    with embedded_server("resume-chat-bench-") as (data_dir, url):
        r = connect(url)
        facts = machine_facts(r.info("server"))
        append_cost = measurements.append_cost(r)
        memory = measurements.memory_per_message(r)
        trips = measurements.round_trips_per_append(r, url)
        send_writes = measurements.round_trips_per_send(r)
        searching = search.searching(r, data_dir / "p9")
        r.flushdb()  # the rows after start from an empty server, as they always have
        r.close()
        first = ttft.first_token(url, data_dir / "app")
        pages = page.conversation_page(url, data_dir / "page")
        redeeming = redemption.redemption_latency(url, data_dir / "p5")
        watching = watchers.watchers_cost(url, data_dir / "p8")
        cache_use = caching.twentieth_turn()
        grown = growth.growth(data_dir / "growth")
    print(f"Resume Chat benchmark: {facts}")
    print("Ratios come from one run on a noisy shared machine; both sides of each ratio are")
    print("measured in that run on the same server.\n")
    print(
        render(
            [
                *p1_rows(append_cost),
                *p2_rows(pages.throughput),
                *p3_rows(memory),
                p4_row(first),
                *redemption.p5_rows(redeeming),
                p6_row(trips),
                p6_send_row(send_writes),
                *p7_rows(pages.weight),
                watchers.p8_row(watching),
                *search.p9_rows(searching),
                p10_row(cache_use),
                *growth.rows(grown),
            ]
        )
    )
    print()
    for note in [
        *p1_notes(append_cost),
        *p2_notes(pages.throughput),
        p3_note(memory),
        *p4_notes(first),
        *redemption.p5_notes(redeeming),
        *p6_notes(trips),
        *p7_notes(pages.weight, pages.html_parts),
        watchers.p8_note(watching),
        search.p9_note(searching),
        p10_note(cache_use),
        growth.note(grown),
    ]:
        print(note)
    print(f"\nFinished in {time.perf_counter() - started:.1f} s.")


if __name__ == "__main__":
    main()
