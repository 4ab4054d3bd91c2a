"""The report page: one self-contained HTML file per video (`predict_video.py -report`).

The page plays the video (by relative path) beside, per person, a timeline drawn on a canvas from
the data inlined in the page: the 8 smoothed probabilities stacked, the label track, the ground
truth when known, and frames without a face as gaps; a cursor follows playback, a click or drag
seeks, hovering shows the frame's values. Script and style come from report_assets/ and are
inlined when the page is written, so it opens from disk with no server and no network.

Series travel as base64 bytes rather than JSON numbers, so an hour of video (about 100,000 frames
per person) stays a few MB: probabilities are quantised to 1/254 (255 marks a frame without a
face), labels and ground truth are one byte per frame (255 = none).
"""
import base64
import html
import json
import os
import urllib.parse
from dataclasses import dataclass
from typing import Optional

import numpy as np

from fileio import atomic_open
from labels import ABAW_CLASSES
from summary import PersonSummary

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'report_assets')
# matplotlib's tab10, the colours of the PNG timelines (plots.plot_timeline), one per ABAW class.
LABEL_COLOURS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f')
NO_VALUE = 255
PROB_SCALE = 254


@dataclass
class PersonSeries:
    """One person's track as the page draws it: output name (of its CSV), person number (None
    when the video has no face), probabilities [T, 8] (NaN rows without a face), label of every
    frame [T], ground truth [T] (-1 = not annotated) or None, and the summary."""
    name: str
    number: Optional[int]
    probs: np.ndarray
    labels: np.ndarray
    truth: Optional[np.ndarray]
    summary: PersonSummary
    csv: str


def _bytes_b64(values):
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.uint8).tobytes()).decode('ascii')


def encode_probs(probs):
    """Frame-major bytes (T x 8) of probabilities, NO_VALUE where the row is NaN, as base64."""
    probs = np.asarray(probs, dtype=np.float64)
    missing = np.isnan(probs).any(axis=1)
    quantised = np.rint(np.clip(np.nan_to_num(probs), 0.0, 1.0) * PROB_SCALE).astype(np.uint8)
    quantised[missing] = NO_VALUE
    return _bytes_b64(quantised)


def encode_labels(labels):
    """One byte per frame, NO_VALUE for a negative (unknown) label, as base64."""
    labels = np.asarray(labels, dtype=np.int64)
    return _bytes_b64(np.where(labels < 0, NO_VALUE, labels))


def relative_url(target, out_dir):
    """A URL to `target` relative to the page's folder (absolute file URL across drives)."""
    try:
        rel = os.path.relpath(os.path.abspath(target), os.path.abspath(out_dir))
    except ValueError:
        return 'file://' + urllib.parse.quote(os.path.abspath(target).replace(os.sep, '/'))
    return urllib.parse.quote(rel.replace(os.sep, '/'))


def page_data(title, video_url, fps, fps_known, people, settings='', links=()):
    """The JSON the page's script reads; links are (text, relative URL) pairs."""
    return {
        'title': title, 'video': video_url, 'fps': fps, 'fps_known': fps_known, 'settings': settings,
        'links': [{'text': text, 'href': href} for text, href in links],
        'classes': list(ABAW_CLASSES), 'colours': list(LABEL_COLOURS),
        'no_value': NO_VALUE, 'prob_scale': PROB_SCALE,
        'people': [{
            'name': p.name, 'number': p.number, 'frames': int(len(p.labels)), 'csv': p.csv,
            'probs': encode_probs(p.probs), 'labels': encode_labels(p.labels),
            'truth': None if p.truth is None else encode_labels(p.truth),
            'summary': {
                'face_frames': p.summary.face_frames, 'seconds': p.summary.seconds,
                'shares': None if p.summary.face_frames == 0 else [float(s) for s in p.summary.shares],
                'dominant': p.summary.dominant, 'longest_s': [float(s) for s in p.summary.longest_s],
                'text': p.summary.describe()},
        } for p in people],
    }


def _asset(name):
    with open(os.path.join(ASSETS, name), encoding='utf-8') as f:
        return f.read()


def render(data):
    """The whole page as one string: the template with style, data and script inlined."""
    # '<' escaped inside the JSON so no string in it can close the <script> element.
    payload = json.dumps(data, separators=(',', ':'), allow_nan=False).replace('<', '\\u003c')
    page = _asset('report.html')
    for key, value in (('TITLE', html.escape(data['title'])), ('STYLE', _asset('report.css')),
                       ('DATA', payload), ('SCRIPT', _asset('report.js'))):
        page = page.replace('{{' + key + '}}', value)
    return page


def write_report(path, title, video, people, fps, fps_known=True, settings='', files=()):
    """Write the report page of one video atomically; `video` is the file the page plays and
    `files` the data files it links (both by path relative to the page), `people` a list of
    PersonSeries."""
    out_dir = os.path.dirname(os.path.abspath(path))
    links = [(os.path.basename(f), relative_url(f, out_dir)) for f in files]
    data = page_data(title, relative_url(video, out_dir), fps, fps_known, people, settings, links)
    with atomic_open(path, 'w', encoding='utf-8') as f:
        f.write(render(data))
    return path
