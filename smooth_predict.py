"""Coarse-to-fine fusion and Smooth Predicting of per-frame outputs into ABAW EXPR predictions.

Reads the `predictions.npz` files that `-eval` writes for the coarse (5-class) and the negative
(4-class) model, smooths each video over time and fuses the two models into the 8 ABAW classes,
fills the frames that have no face with the nearest prediction, scores against annotations,
optionally searches the smoothing settings, and writes ABAW submission files.

    python smooth_predict.py -coarse coarse/predictions.npz -negative negative/predictions.npz \
        -output out -anno_folder ANNO -search

This is the command only: the rules are fusion.py's (fusion, both Smooth Predicting modes,
filling), the per-video table and the submission files video_table.py's, the scoring and the
settings search smoothing_search.py's.
"""
import json
import logging
import os
import sys

import numpy as np

import console
from errors import UsageError
from fileio import atomic_open, check_writable_dir, is_inside
from fusion import FIGURE_WINDOW, Smoothing
from labels import ANNOTATION_SPLITS, read_video_list
from metrics import format_table
from smoothing_search import (SEARCH_ALPHAS, SEARCH_WINDOWS, best_setting, format_search, score,
                              search, write_search_csv)
from video_table import (DEFAULT_SPLIT, build_video_table, load_predictions, write_abaw3,
                         write_csv, write_plots)

log = logging.getLogger('smooth_predict')


def build_parser():
    """The command line of smooth_predict.py."""
    parser = console.ArgumentParser(
        description='Smooth coarse and negative model predictions over time, fuse them into ABAW '
                    'EXPR labels, score them and write submission files. Without flags: '
                    "-smooth_on logits -window 2 -fusion soft, Smooth Predicting as the release's "
                    'figure draws it (per model, on the logits, five frames), then soft fusion.')
    parser.add_argument('-coarse', required=True, help='predictions.npz of the coarse model')
    parser.add_argument('-negative', required=True, help='predictions.npz of the negative model')
    parser.add_argument('-output', required=True, help='output folder')
    parser.add_argument('-anno_folder', help='ABAW EXPR annotations, the folder holding Train_Set/ '
                        'and Validation_Set/ as in training (a folder holding the <video>.txt '
                        'files directly works too): ground truth and frame counts')
    parser.add_argument('-split', default=DEFAULT_SPLIT,
                        help=f'the -anno_folder sub-folder to read (default {DEFAULT_SPLIT}; '
                             f"{' or '.join(ANNOTATION_SPLITS)} in Aff-Wild2)")
    parser.add_argument('-frames_folder', help='frame counts of videos without annotations: the '
                        'aligned-faces folder of python -m preprocess (its .done manifests), or '
                        'extracted frames (FRAMES/<video>/*.jpg)')
    parser.add_argument('-video_list', help='videos to write (one name per line), e.g. the test '
                        'set: a listed video without any detected face is written all Neutral')
    Smoothing.add_arguments(parser)
    parser.add_argument('-search', action='store_true', help='score both smoothing modes on the '
                        'annotated videos (logits: every K of ' + ' '.join(map(str, SEARCH_WINDOWS))
                        + '; fused: every K x A of ' + ' '.join(f'{a:g}' for a in SEARCH_ALPHAS)
                        + '), write search.csv and use the best; replaces -smooth_on/-window/-alpha')
    parser.add_argument('-settings_from', metavar='METRICS_JSON',
                        help="use the setting another run chose and recorded in its metrics.json "
                             "(e.g. -search's on the validation set, for the test set); replaces "
                             '-fusion/-smooth_on/-window/-alpha')
    parser.add_argument('-format', choices=('abaw3', 'csv'), default='abaw3')
    parser.add_argument('-plot', type=int, default=2, help='timeline plots for this many videos')
    return parser


def read_setting(path):
    """The Smoothing a smooth_predict.py run used: the 'smoothed' entry of its metrics.json."""
    try:
        with open(path, encoding='utf-8') as f:
            fields = json.load(f)['smoothed']
        return Smoothing(fields['mode'], fields['fusion'], fields['window'],
                         fields['alpha'] if fields['mode'] == 'fused' else None)
    except OSError as err:
        raise UsageError(f"-settings_from {path}: cannot read it ({err.strerror})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"-settings_from {path}: not a smooth_predict.py metrics.json "
                         f"(no usable 'smoothed' setting: {err})") from None


def apply_settings_from(parser, args):
    """-settings_from FILE: its setting replaces the smoothing flags, which must then be left out."""
    given = [f"-{name}" for name in ('fusion', 'smooth_on', 'window', 'alpha')
             if getattr(args, name) != parser.get_default(name)]
    if given or args.search:
        parser.error(f"-settings_from sets the smoothing: leave out {', '.join(given or ['-search'])}")
    setting = read_setting(args.settings_from)
    args.fusion, args.smooth_on, args.window, args.alpha = (setting.fusion, setting.mode, setting.window,
                                                            setting.alpha)


def _check_args(parser, args):
    if args.settings_from:
        apply_settings_from(parser, args)
    Smoothing.from_args(args)  # the smoothing flags' checks
    if args.plot < 0:
        parser.error(f"-plot must be >= 0, got {args.plot}")
    if args.search and not args.anno_folder:
        parser.error("-search needs -anno_folder (the ground truth to score against)")
    for flag, folder in (('-anno_folder', args.anno_folder), ('-frames_folder', args.frames_folder)):
        if folder is None:
            continue
        if not os.path.isdir(folder):
            parser.error(f"{flag} {folder}: not a folder")
        if is_inside(args.output, folder):
            parser.error(f"-output {args.output} is inside {flag} {folder}; inputs are never "
                         "written to: choose another folder")


def searched_setting(table, fusion, figure):
    """The best Smoothing of `search` on the table, logged with the grid and the figure's score."""
    rows, best = search(table)
    log.info("search on the annotated frames, %s fusion (logits: SP on each model's logits, "
             "as the release's figure; A=: SP on the fused probabilities):\n%s", fusion,
             format_search(rows))
    setting = best_setting(best, fusion)
    drawn = next((row for row in rows if row['mode'] == figure.mode
                  and row['window'] == figure.window), None)
    log.info("best: %s, macro F1 %.5f%s", setting.summary, best['macro_f1'],
             f" (the release's figure, SP on logits K={FIGURE_WINDOW}: {drawn['macro_f1']:.5f})"
             if drawn else '')
    return setting, rows


def scored_metrics(table, setting, figure, row_labels, searched):
    """metrics.json's content: raw, figure and chosen setting's scores (printed as a table)."""
    raw_scores = score(table, np.argmax(table.probs, axis=1))
    smooth_scores = score(table, row_labels)
    figure_scores = smooth_scores
    if raw_scores is not None and setting != figure:
        figure_scores = score(table, np.argmax(table.smoothed(figure), axis=1))
    no_smoothing = {'mode': None, 'fusion': setting.fusion, 'window': 0, 'alpha': None}
    metrics = {
        'raw': {**no_smoothing, **(raw_scores or {})},
        'figure': {**figure.fields(), **(figure_scores or {})},
        'smoothed': {**setting.fields(), **(smooth_scores or {})},
        'searched': bool(searched),
        'videos': len(table.video_names),
        'predicted_frames': int(table.frames.size),
        'frames': int(table.num_frames.sum()),
        'annotated': raw_scores is not None,
    }
    if raw_scores is not None:
        columns = {'no smoothing': raw_scores, f'logits K={FIGURE_WINDOW} (figure)': figure_scores}
        if setting != figure:
            columns[setting.short] = smooth_scores
        print(format_table(columns, title=f"{setting.fusion} fusion, scored on "
                                          f"{raw_scores['count']} annotated frames"))
    return metrics, smooth_scores


def run(args):
    """Fuse, smooth, score and write the outputs; returns the metrics written to metrics.json."""
    setting = Smoothing.from_args(args)
    figure = Smoothing('logits', args.fusion, FIGURE_WINDOW)
    coarse = load_predictions(args.coarse, 'coarse')
    negative = load_predictions(args.negative, 'negative')
    video_names = read_video_list(args.video_list) if args.video_list else None
    table = build_video_table(coarse, negative, args.fusion, args.anno_folder, args.frames_folder,
                              video_names, split=args.split)
    check_writable_dir(args.output, '-output')  # only now: bad inputs leave no empty folder
    log.info("%d videos, %d predicted frames, %d frames in all (%s fusion)", len(table.video_names),
             table.frames.size, int(table.num_frames.sum()), args.fusion)

    if args.search:
        setting, rows = searched_setting(table, args.fusion, figure)
        write_search_csv(os.path.join(args.output, 'search.csv'), rows)
    log.info("%s", setting.describe())

    smoothed = table.smoothed(setting)
    row_labels = np.argmax(smoothed, axis=1)
    frame_labels = table.all_frame_labels(row_labels)
    metrics, smooth_scores = scored_metrics(table, setting, figure, row_labels, args.search)
    with atomic_open(os.path.join(args.output, 'metrics.json'), 'w', encoding='utf-8') as f:
        json.dump(metrics, f, indent=2)

    if args.format == 'abaw3':
        write_abaw3(args.output, table, frame_labels)
        log.info("wrote %d <video>.txt files to %s", len(table.video_names), args.output)
    else:
        write_csv(os.path.join(args.output, 'predictions.csv'), table, frame_labels)
        log.info("wrote %s", os.path.join(args.output, 'predictions.csv'))
    if args.plot:
        write_plots(args.output, table, smoothed, frame_labels, args.plot, smooth_scores,
                    setting.summary)
    return metrics


def main(argv=None):
    """Command-line entry; returns the exit code (errors: one `error:` line, see console.py)."""
    return console.run_command(_parse_and_run, argv)


def _parse_and_run(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    console.setup(log)
    run(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
