"""Browser tests: the app as a real gunicorn process, driven by Debian's headless Chromium.

Fixtures:

- ``app_server``: ``resume-chat serve`` on a free port, on the session's real Redis,
  with a fixed secret key; ``stop()``, ``start()`` and ``restart()`` keep the port and Redis.
- ``browser``: one headless Chromium for the session (``/usr/bin/chromium``, never downloaded).
- ``context`` / ``page``: a fresh browser context (its own cookies) and page per test;
  ``new_context(**options)`` makes more, e.g. one with JavaScript disabled.
- ``screenshot``: saves ``test-output/<name>.png`` at the project root.

A failing test also leaves a screenshot of each of its open pages in ``test-output/failures/``.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.chromium import CHROMIUM, CHROMIUM_ARGS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_DIR = PROJECT_ROOT / "test-output"


# Playwright's waits: expectations and actions fail after these, never hang for long.
EXPECT_TIMEOUT_MS = 5_000
ACTION_TIMEOUT_MS = 10_000

expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.fixture
def app_server(serve):
    """The app with its default settings."""
    return serve()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless. Missing is a failure, never a skip."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium. "
            "Run `make test`, which installs it (or `sudo apt-get install chromium`). "
            "Playwright's own browser download is not used.",
            pytrace=False,
        )
    shutil.rmtree(OUTPUT_DIR / "failures", ignore_errors=True)  # none left from an earlier run
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: Browser, request):
    """Make browser contexts (each its own cookies); all are closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        options.setdefault("viewport", {"width": 1000, "height": 800})
        context = browser.new_context(**options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    failed = getattr(request.node, "rep_call", None)
    for number, context in enumerate(contexts):
        if failed is not None and failed.failed:
            _save_failure_screenshots(context, f"{request.node.name}-{number}")
        context.close()


@pytest.fixture
def context(new_context) -> BrowserContext:
    return new_context()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


@pytest.fixture
def screenshot(output_dir):
    """``screenshot(page, "name")`` saves the whole page as ``test-output/name.png``."""

    def save(page: Page, name: str) -> Path:
        path = output_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def _save_failure_screenshots(context: BrowserContext, stem: str) -> None:
    folder = OUTPUT_DIR / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    for number, page in enumerate(context.pages):
        try:
            page.screenshot(path=str(folder / f"{stem}-{number}.png"), full_page=True)
        except Exception as error:  # the page may be gone; the test's own failure matters more
            print(f"could not save a failure screenshot: {error}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can see whether it failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
