"""Search of one's own conversations: the words, what matches, the snippets and their pages,
and never another owner's; the same answers from the search module's index as from reading
every message, the index kept up to date and gone with its conversation."""

import time

import pytest

from tests.conftest import Chat
from webapp import conversations, deletion, search
from webapp.conversations import Message
from webapp.storage import keys

OWNER, OTHER = "g:search-owner", "g:someone-else"


@pytest.fixture(params=["scan", "index", "cluster"])
def engine(request):
    """(client, use_index): every message read on the plain server and on a cluster, and the
    search module's index on a server that has one."""
    if request.param == "index":
        client = request.getfixturevalue("search_redis")
        assert search.has_search_module(client)
        return client, True
    client = request.getfixturevalue("real_redis" if request.param == "scan" else "cluster_redis")
    assert request.param == "cluster" or not search.has_search_module(client)
    return client, False


def add(r, lifetimes, owner, *texts, title=None):
    conversation_id = conversations.create_conversation(r, owner, lifetimes)
    for number, text in enumerate(texts):
        message = Message(
            conversations.new_id(), "user" if number % 2 == 0 else "assistant", text, time.time()
        )
        conversations.append_message_and_touch(
            r, conversation_id, owner, message, lifetimes, title=title
        )
    return conversation_id


def find(engine, query, owner=OWNER, page_size=50):
    r, use_index = engine
    return search.search(r, owner, query, page_size, use_index)


def shown(parts):
    return "".join(part.text for part in parts)


def marked(parts):
    return [part.text for part in parts if part.match]


def test_words_are_lower_case_once_each_and_a_prefix_of_another_adds_nothing():
    assert search.words_of("Porto, PORTO and port-wine!") == ["porto", "and", "wine"]
    assert search.words_of("a apple") == ["a", "apple"]
    assert search.words_of("  ,;  ") == []
    assert len(search.words_of(" ".join(f"w{n}" for n in range(20)))) == search.MAX_WORDS


def test_a_word_from_an_old_message_finds_it_with_its_page(engine, lifetimes):
    r, _ = engine
    texts = [f"filler message number {n}" for n in range(120)]
    texts[3] = "We talked about the Xylophone museum in Lisbon"
    conversation_id = add(r, lifetimes, OWNER, *texts, title="A long chat")
    add(r, lifetimes, OWNER, "Nothing to see here")

    found = find(engine, "xylo")
    assert [result.conversation_id for result in found.results] == [conversation_id]
    (hit,) = found.results[0].hits
    assert hit.role == "assistant" and marked(hit.snippet) == ["Xylophone"]
    assert "museum in Lisbon" in shown(hit.snippet)
    assert hit.before == 3 + 1 + 25  # a page of 50 with the message near its middle
    messages = conversations.read_messages(r, conversation_id)
    assert messages[3].id == hit.message_id


def test_every_word_must_begin_a_word_of_one_message_or_the_title(engine, lifetimes):
    r, _ = engine
    both = add(r, lifetimes, OWNER, "Trains from Porto to Braga")
    add(r, lifetimes, OWNER, "Porto only", "and Braga later")  # split across messages
    titled = add(r, lifetimes, OWNER, "an untitled-looking text", title="Braga and Porto")
    add(r, lifetimes, OWNER, "Oporto and Abraga")  # inside words, not at their start

    found = find(engine, "porto braga")
    assert [result.conversation_id for result in found.results] == [titled, both]
    assert found.results[0].hits == [] and marked(found.results[0].title) == ["Braga", "Porto"]
    assert marked(found.results[1].hits[0].snippet) == ["Porto", "Braga"]


def test_another_owners_conversations_are_never_read_or_found(engine, lifetimes):
    r, _ = engine
    add(r, lifetimes, OTHER, "my secret zeppelin plans")
    mine = add(r, lifetimes, OWNER, "a zeppelin of my own")
    assert [result.conversation_id for result in find(engine, "zeppelin").results] == [mine]
    assert find(engine, "secret").results == []
    assert [result.conversation_id for result in find(engine, "secret", OTHER).results]


def test_newest_activity_first_and_at_most_the_shown_number(engine, lifetimes):
    r, _ = engine
    made = [
        add(r, lifetimes, OWNER, f"quokka fact {n}") for n in range(search.CONVERSATIONS_SHOWN + 2)
    ]
    found = find(engine, "quokka")
    assert found.more
    assert [result.conversation_id for result in found.results] == made[::-1][
        : search.CONVERSATIONS_SHOWN
    ]


def test_a_common_word_is_settled_by_the_newest_conversations(real_redis, lifetimes):
    made = [add(real_redis, lifetimes, OWNER, f"wombat fact {n}") for n in range(75)]
    real_redis.config_resetstat()
    found = find((real_redis, False), "wombat")
    looked_at = real_redis.info("commandstats")["cmdstat_evalsha"]["calls"]  # one each
    assert looked_at == search.FIRST_LOOK
    assert found.more
    shown_ids = [result.conversation_id for result in found.results]
    assert shown_ids == made[::-1][: search.CONVERSATIONS_SHOWN]


def test_a_word_in_old_conversations_only_is_found_after_every_newer_one_is_read(
    real_redis, lifetimes
):
    old = [add(real_redis, lifetimes, OWNER, f"echidna fact {n}") for n in range(3)]
    for n in range(2 * search.FIRST_LOOK):
        add(real_redis, lifetimes, OWNER, f"nothing to see {n}")
    found = find((real_redis, False), "echidna")
    assert [result.conversation_id for result in found.results] == old[::-1]
    assert not found.more


def test_the_newest_are_looked_at_first_by_their_activity_not_their_index_order(engine, lifetimes):
    r, _ = engine
    made = [add(r, lifetimes, OWNER, f"numbat fact {n}") for n in range(45)]
    # The owner's index lists them the other way round (it is scored by its own clock).
    r.zadd(keys.owner_conversations(OWNER), {cid: -n for n, cid in enumerate(made)})
    found = find(engine, "numbat")
    assert [result.conversation_id for result in found.results] == made[::-1][
        : search.CONVERSATIONS_SHOWN
    ]


def test_hits_are_the_newest_few_of_a_conversation(engine, lifetimes):
    r, _ = engine
    add(r, lifetimes, OWNER, *[f"banjo lesson {n}" for n in range(10)])
    (result,) = find(engine, "banjo").results
    assert [shown(hit.snippet) for hit in result.hits] == [
        "banjo lesson 9", "banjo lesson 8", "banjo lesson 7"
    ]  # fmt: skip
    assert all(hit.before is None for hit in result.hits)  # on the newest page


def test_a_long_message_shows_a_snippet_around_its_match(engine, lifetimes):
    r, _ = engine
    text = "lorem ipsum " * 100 + "the needle is here " + "dolor sit " * 100
    add(r, lifetimes, OWNER, text)
    (hit,) = find(engine, "needle").results[0].hits
    snippet = shown(hit.snippet)
    assert snippet.startswith("…") and snippet.endswith("…") and "needle" in snippet
    assert len(snippet) <= search.SNIPPET_CHARS + 2


def test_what_changes_after_a_search_is_found_by_the_next(engine, lifetimes):
    r, _ = engine
    conversation_id = add(r, lifetimes, OWNER, "about gardens")
    assert find(engine, "tulips").results == []
    message = Message(conversations.new_id(), "user", "and tulips", time.time())
    conversations.append_message_and_touch(r, conversation_id, OWNER, message, lifetimes)
    assert [result.conversation_id for result in find(engine, "tulips").results] == [
        conversation_id
    ]
    conversations.rename(r, conversation_id, "Dutch spring")
    assert find(engine, "dutch").results[0].conversation_id == conversation_id


def test_a_search_document_expires_with_its_conversation_and_goes_when_it_is_deleted(
    search_redis, lifetimes
):
    engine = (search_redis, True)
    conversation_id = add(search_redis, lifetimes, OWNER, "walrus facts")
    assert find(engine, "walrus").results
    document = keys.conversation_search(conversation_id)
    expires_at = search_redis.pexpiretime(keys.conversation_meta(conversation_id))
    assert search_redis.pexpiretime(document) == expires_at > 0
    deletion.delete_conversation(search_redis, conversation_id, OWNER)
    assert not search_redis.exists(document)
    assert find(engine, "walrus").results == []


def test_the_index_is_made_again_when_the_server_lost_it(search_redis, lifetimes):
    engine = (search_redis, True)
    add(search_redis, lifetimes, OWNER, "narwhal tusks")
    assert find(engine, "narwhal").results
    search_redis.ft(search.INDEX).dropindex()
    assert find(engine, "narwhal").results


def test_without_a_search_module_nothing_but_the_conversations_is_written(real_redis, lifetimes):
    add(real_redis, lifetimes, OWNER, "ocelot")
    before = sorted(real_redis.keys("*"))
    assert find((real_redis, False), "ocelot").results
    assert sorted(real_redis.keys("*")) == before


# The page.


def test_the_search_page_finds_ones_own_words_escaped_and_links_to_the_message(chat, client, app):
    conversation_id = chat.start_conversation("Tell me about <b>capybaras</b> & friends")
    Chat(app.test_client()).start_conversation("capybaras are secret here")

    page = client.get("/search?q=capybara").text
    assert '<meta name="robots" content="noindex">' in page
    assert "1 conversation matches" in page
    assert "<mark>capybaras</mark>" in page and "&lt;b&gt;" in page and "<b>" not in page
    message_id = conversations.read_messages(app.extensions["redis"], conversation_id)[0].id
    assert f'href="/c/{conversation_id}#m-{message_id}"' in page
    assert "secret" not in page


def test_an_empty_query_shows_the_form_and_nothing_of_yours_says_so(chat, client):
    chat.start_conversation("hello")
    assert "Words to find" in client.get("/search").text
    assert "Nothing of yours matches “zebra”" in client.get("/search?q=zebra").text
    assert 'href="/search"' in client.get("/").text  # from the sidebar


def test_too_many_searches_are_refused_with_the_query_kept(make_app):
    client = make_app(SEARCHES_PER_MINUTE=2).test_client()
    for _ in range(2):
        assert client.get("/search?q=anything").status_code == 200
    refused = client.get("/search?q=anything")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert "searching faster than allowed" in refused.text and 'value="anything"' in refused.text


def test_the_page_uses_a_servers_search_module(make_app, search_redis, search_redis_server):
    client = make_app(REDIS_URL=search_redis_server.url).test_client()
    conversation_id = Chat(client).start_conversation("pangolins at dusk")
    assert "<mark>pangolins</mark>" in client.get("/search?q=pango").text
    assert search_redis.hget(keys.conversation_search(conversation_id), "body")


def test_words_after_a_new_line_and_beyond_ascii_are_found_whatever_their_case(engine, lifetimes):
    r, _ = engine
    conversation_id = add(r, lifetimes, OWNER, "Packing list:\n\tumbrella\nand a map of MÜNCHEN")
    for query in ("umbrella", "münchen", "MAP", "Münch"):
        found = find(engine, query)
        assert [result.conversation_id for result in found.results] == [conversation_id], query
    assert marked(find(engine, "münchen").results[0].hits[0].snippet) == ["MÜNCHEN"]
