"""Debian's chromium driven by Playwright, headless and offline: for the report page's browser test
and its screenshot (`make test-browser` installs both; Playwright's own browser download is never
used, it cannot be reached here)."""
import contextlib
import os
import tempfile

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
# No GPU, no sandbox (root in a container), and nothing that phones home.
CHROMIUM_ARGS = ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']


@contextlib.contextmanager
def chromium(viewport=(1200, 900)):
    """A Playwright browser context of CHROMIUM with a fresh profile folder, closed on exit."""
    from playwright.sync_api import sync_playwright
    if not os.path.isfile(CHROMIUM):
        raise FileNotFoundError(f"{CHROMIUM}: no chromium there (`make test-browser` installs it)")
    with tempfile.TemporaryDirectory(prefix='chromium_profile') as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={'width': viewport[0], 'height': viewport[1]})
        try:
            yield context
        finally:
            context.close()


def screenshot(page_path, png_path, viewport=(1200, 900), full_page=True, seconds=None):
    """Save a PNG of a report page once it is drawn, its video at `seconds` when given."""
    with chromium(viewport) as context:
        page = context.new_page()
        page.goto('file://' + os.path.abspath(page_path))
        page.wait_for_selector('body[data-ready="1"]')
        if seconds is not None:
            page.wait_for_function("document.getElementById('video').readyState >= 1")
            page.evaluate("""(t) => new Promise(done => {
                const v = document.getElementById('video');
                v.addEventListener('seeked', () => done(), {once: true});
                v.currentTime = t;
            })""", seconds)
            page.wait_for_function("document.getElementById('video').readyState >= 2")
        page.screenshot(path=png_path, full_page=full_page)
    return png_path
