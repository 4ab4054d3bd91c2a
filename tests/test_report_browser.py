"""The report page in a real browser (`make test-browser`): Debian's chromium driven by Playwright.

A two-person clip goes through predict_video.py -report (tiny random-weight models); the page must
load with no console error and no network request, draw each person's labels as the CSV has them,
keep its cursor on the video's time, seek where it is clicked, and follow playback. A 100,000-frame
synthetic series per person measures the draw time. The screenshot and the measured times go to
output/browser/ (BROWSER_ARTIFACTS overrides), as artifacts.

Run with `make test-browser`, which installs Playwright and /usr/bin/chromium (CHROMIUM overrides);
`pytest -m browser` selects them, any other run skips them.
"""
import csv
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.dirname(os.path.abspath(__file__))]

from demo.synthetic_video import write_crossing_clip  # noqa: E402
from helpers import save_random_classifier  # noqa: E402

import predict_video  # noqa: E402
from headless import CHROMIUM, chromium  # noqa: E402
import report  # noqa: E402
from labels import ABAW_CLASSES  # noqa: E402
from summary import summarise  # noqa: E402

ARTIFACTS = os.environ.get('BROWSER_ARTIFACTS', os.path.join(ROOT, 'output', 'browser'))
LONG_FRAMES = 100_000

pytest.importorskip('playwright.sync_api', reason='Playwright not installed: make test-browser')
# Out of `make test` (a predict_video run and a browser start): only `-m browser` selects them.
SELECTED = "'browser' in config.getoption('markexpr') and 'not browser' not in config.getoption('markexpr')"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(f"not ({SELECTED})", reason='browser test: run `make test-browser`'),
              pytest.mark.skipif(not os.path.isfile(CHROMIUM),
                                 reason=f'{CHROMIUM} missing: make test-browser installs it')]


def _rgb(hex_colour):
    return [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]


@pytest.fixture(scope='module')
def browser():
    with chromium() as context:
        yield context


class Page:
    """One opened report with every console error, page error and request it caused."""

    def __init__(self, context, path):
        self.page = context.new_page()
        self.errors, self.requests = [], []
        self.page.on('console', lambda m: m.type == 'error' and self.errors.append(m.text))
        self.page.on('pageerror', lambda e: self.errors.append(str(e)))
        self.page.on('request', lambda r: self.requests.append(r.url))
        self.page.goto('file://' + str(path))
        self.page.wait_for_selector('body[data-ready="1"]')

    def __getattr__(self, name):
        return getattr(self.page, name)

    def tracks(self):
        return self.page.evaluate("""() => [...document.querySelectorAll('.track')].map(t => {
            const r = t.getBoundingClientRect(), c = t.querySelector('canvas.data');
            return {left: r.left, top: r.top, width: r.width, canvas_width: c.width,
                    dpr: window.devicePixelRatio, frames: +t.dataset.frames, fps: +t.dataset.fps,
                    label_y: +t.dataset.labelY, truth_y: t.dataset.truthY};
        })""")

    def pixels(self, person, layer, xs, y):
        """RGBA of canvas `layer` ('data' or 'overlay') of a person's track at device pixels."""
        return self.page.evaluate("""([person, layer, xs, y]) => {
            const c = document.querySelectorAll('.track')[person].querySelector('canvas.' + layer);
            const ctx = c.getContext('2d');
            return xs.map(x => [...ctx.getImageData(x, y, 1, 1).data]);
        }""", [person, layer, list(xs), y])

    def cursor_columns(self, person, y):
        """Device-pixel columns where the cursor is drawn on a person's track."""
        return self.page.evaluate("""([person, y]) => {
            const c = document.querySelectorAll('.track')[person].querySelector('canvas.overlay');
            const row = c.getContext('2d').getImageData(0, y, c.width, 1).data;
            const on = [];
            for (let x = 0; x < c.width; x++) if (row[4 * x + 3] > 0) on.push(x);
            return on;
        }""", [person, y])

    def seek(self, seconds):
        self.page.evaluate("""(t) => new Promise(done => {
            const v = document.getElementById('video');
            v.addEventListener('seeked', () => done(), {once: true});
            v.currentTime = t;
        })""", seconds)


@pytest.fixture(scope='module')
def two_people(tmp_path_factory, tiny_cfg_file):
    root = tmp_path_factory.mktemp('report_browser')
    video = root / 'videos' / 'cross.mp4'
    video.parent.mkdir()
    write_crossing_clip(video)
    weights = {kind: save_random_classifier(tiny_cfg_file, kind, str(root / f'{kind}.pdparams'), seed)
               for seed, kind in enumerate(('coarse', 'negative'), start=1)}
    out = root / 'out'
    argv = [str(video), '-output', str(out), '-workers', '0', '-annotate', '-report']
    for kind in ('coarse', 'negative'):
        argv += [f'-{kind}_cfg', tiny_cfg_file, f'-{kind}_weights', weights[kind]]
    assert predict_video.main(argv) == 0
    people = []
    for number in (1, 2):
        with open(out / f'cross_person{number}.csv', newline='') as f:
            people.append(list(csv.DictReader(f)))
    return {'report': out / 'cross_report.html', 'people': people, 'out': out}


def test_two_people_report_in_chromium(browser, two_people):
    page = Page(browser, two_people['report'])
    page.wait_for_function("document.getElementById('video').readyState >= 1")
    assert page.evaluate("document.getElementById('video-note').hidden"), 'the browser could not play the video'
    tracks = page.tracks()
    assert len(tracks) == 2

    for person, (track, rows) in enumerate(zip(tracks, two_people['people'])):
        frames = track['frames']
        assert frames == len(rows) == 36
        width, dpr = track['canvas_width'], track['dpr']
        # Each sampled frame's label colour, at the middle of its span, is its CSV label's.
        sample = list(range(0, frames, 3))
        xs = [int((i + 0.5) * width / frames) for i in sample]
        colours = page.pixels(person, 'data', xs, int(track['label_y'] * dpr))
        expected = [_rgb(report.LABEL_COLOURS[int(rows[i]['label_id'])]) + [255] for i in sample]
        assert colours == expected, person
        labels = {rows[i]['label'] for i in sample}
        # Random models: the check means something only if the labels are not all one.
        if person == 0:
            assert len(labels) > 1, labels

        # currentTime moves the cursor to the matching x (time / duration of the frames).
        duration = frames / track['fps']
        cursor_y = int(10 * dpr)
        for t in (0.3 * duration, 0.75 * duration):
            page.seek(t)
            on = page.cursor_columns(person, cursor_y)
            assert on and abs(np.mean(on) - t / duration * width) <= 1.5, (t, on)

        # A click at x seeks the video to the matching time (within one frame).
        x_css = 0.6 * track['width']
        page.evaluate("""() => { window.__seeked = false; document.getElementById('video')
            .addEventListener('seeked', () => { window.__seeked = true; }, {once: true}); }""")
        page.mouse.click(track['left'] + x_css, track['top'] + 20)
        page.wait_for_function('window.__seeked')
        now = page.evaluate("document.getElementById('video').currentTime")
        assert abs(now - 0.6 * duration) <= 1 / track['fps'], now
        on = page.cursor_columns(person, cursor_y)
        assert abs(np.mean(on) - 0.6 * width) <= 1.5

        # Dragging seeks along: the video ends where the pointer is let go.
        page.mouse.move(track['left'] + 0.2 * track['width'], track['top'] + 20)
        page.mouse.down()
        page.mouse.move(track['left'] + 0.4 * track['width'], track['top'] + 20, steps=4)
        page.mouse.up()
        page.wait_for_function(f"Math.abs(document.getElementById('video').currentTime - {0.4 * duration})"
                               f" <= {1 / track['fps']}")

    # Hovering names the frame under the pointer and its label.
    track, rows = tracks[1], two_people['people'][1]
    frame = 33
    page.mouse.move(track['left'] + (frame - 0.5) / track['frames'] * track['width'], track['top'] + 50)
    tip = page.inner_text('#tooltip')
    assert tip.startswith(f'frame {frame} ') and f"label {rows[frame - 1]['label']}" in tip

    # Playback moves the cursors along with the video.
    page.seek(0)
    page.evaluate("""() => { const v = document.getElementById('video'); v.muted = true; return v.play(); }""")
    page.wait_for_function("document.getElementById('video').currentTime > 0.5")
    page.evaluate("document.getElementById('video').pause()")
    page.wait_for_timeout(100)
    now = page.evaluate("document.getElementById('video').currentTime")
    on = page.cursor_columns(0, int(10 * tracks[0]['dpr']))
    assert abs(np.mean(on) - now / (36 / tracks[0]['fps']) * tracks[0]['canvas_width']) <= 1.5

    os.makedirs(ARTIFACTS, exist_ok=True)
    page.mouse.move(0, 0)
    page.screenshot(path=os.path.join(ARTIFACTS, 'report_two_people.png'), full_page=True)
    assert not page.errors, page.errors
    assert all(url.startswith(('file:', 'data:')) for url in page.requests), page.requests
    page.close()


def _long_series(seed, frames=LONG_FRAMES, run=5000):
    """A person's synthetic hour: labels in runs of `run` frames, peaked probabilities, a face
    missing in every 7th run."""
    rng = np.random.default_rng(seed)
    run_labels = rng.integers(0, 8, frames // run + 1)
    labels = np.repeat(run_labels, run)[:frames]
    probs = rng.dirichlet(np.ones(8) * 0.3, frames) * 0.3
    probs[np.arange(frames), labels] += 0.7
    faceless = (np.arange(frames) // run) % 7 == 3
    probs[faceless] = np.nan
    face_frames = np.flatnonzero(~faceless) + 1
    truth = np.where(np.arange(frames) % 3 == 0, labels, -1)
    return labels, probs, face_frames, truth


def test_draw_time_of_a_100000_frame_series(browser, tmp_path):
    fps = 25.0
    people = []
    for number in (1, 2):
        labels, probs, face_frames, truth = _long_series(number)
        people.append(report.PersonSeries(f'long_person{number}', number, probs, labels, truth,
                                          summarise(labels, face_frames, fps), f'long_person{number}.csv'))
    video = tmp_path / 'long.mp4'  # a short clip: the cursor follows it over its first frames
    write_crossing_clip(video, count=12)
    path = report.write_report(str(tmp_path / 'long_report.html'), 'long', str(video), people, fps)
    size_mb = os.path.getsize(path) / 1e6

    page = Page(browser, path)
    timings = page.evaluate('window.REPORT.timings')
    redraws = page.evaluate("""() => { const t = []; for (let i = 0; i < 5; i++) {
        window.REPORT.redraw(); t.push(window.REPORT.timings.draw_ms); } return t; }""")
    cursor = page.evaluate("""() => { const start = performance.now();
        for (let i = 0; i < 200; i++) window.REPORT.setCursor(i * window.REPORT.duration / 200);
        return (performance.now() - start) / 200; }""")

    tracks = page.tracks()
    for person, track in enumerate(tracks):
        labels = people[person].labels
        width, dpr = track['canvas_width'], track['dpr']
        # Away from run boundaries every pixel column holds one run: its colour is that run's label.
        xs = [x for x in range(3, width, 37) if len({int(labels[min(LONG_FRAMES - 1, f)]) for f in
              (x * LONG_FRAMES // width, (x + 1) * LONG_FRAMES // width)}) == 1]
        colours = page.pixels(person, 'data', xs, int(track['label_y'] * dpr))
        expected = [_rgb(report.LABEL_COLOURS[labels[x * LONG_FRAMES // width]]) + [255] for x in xs]
        assert colours == expected

    figures = {'frames_per_person': LONG_FRAMES, 'people': 2, 'page_mb': round(size_mb, 2),
               'canvas_width_px': tracks[0]['canvas_width'],
               'decode_ms': round(timings['decode_ms'], 1), 'first_draw_ms': round(timings['draw_ms'], 1),
               'redraw_ms_median': round(float(np.median(redraws)), 1),
               'cursor_update_ms': round(cursor, 3), 'chromium': page.context.browser.version
               if page.context.browser else None}
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, 'report_timings.json'), 'w', encoding='utf-8') as f:
        json.dump(figures, f, indent=1)
    print(f"\n100,000-frame report, 2 people: {figures}")
    page.screenshot(path=os.path.join(ARTIFACTS, 'report_100000_frames.png'))
    assert not page.errors, page.errors
    assert all(url.startswith(('file:', 'data:')) for url in page.requests), page.requests
    page.close()


def test_unplayable_video_and_no_face_leave_a_note_and_a_working_page(browser, tmp_path):
    video = tmp_path / 'broken.mp4'
    video.write_bytes(b'not a video')
    labels = np.zeros(20, np.int64)
    person = report.PersonSeries('broken', None, np.full((20, 8), np.nan), labels, None,
                                 summarise(labels, np.zeros(0, np.int64), 25.0), 'broken.csv')
    path = report.write_report(str(tmp_path / 'broken_report.html'), 'broken', str(video), [person], 25.0)
    page = Page(browser, path)
    page.wait_for_selector('#video-note:not([hidden])')
    assert 'cannot play broken.mp4' in page.inner_text('#video-note')
    # The timeline still moves its cursor where it is clicked.
    (track,) = page.tracks()
    page.mouse.click(track['left'] + 0.5 * track['width'], track['top'] + 20)
    on = page.cursor_columns(0, int(10 * track['dpr']))
    assert abs(np.mean(on) - 0.5 * track['canvas_width']) <= 1.5
    assert not page.errors, page.errors
    page.close()
