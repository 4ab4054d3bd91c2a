"""`python -m preprocess VIDEO_DIR OUT_DIR ...`: raw videos to aligned 224x224 face folders."""
import collections
import logging
import os
import sys

from tqdm import tqdm

import console
from errors import UsageError
from fileio import check_writable_dir, is_inside
from preprocess import pipeline, shards
from preprocess.faceloop import VIDEO_FAILURES, Detector, default_workers, torch_device, video_failure
from preprocess.faces import FACE_FLAGS, FaceSettings
from labels import read_video_list
from launch_env import processes_on_this_machine
from preprocess.jobs import PlanError, find_videos, plan_jobs
from preprocess.video import VIDEO_EXTENSIONS, probe_frame_count

FACE_FIELDS = ('mode', 'image_size', 'margin', 'min_prob', 'min_face_size', 'jpeg_quality', 'detect_batch',
               'detect_size', 'track_gap_s')
# The face flags' names before they were unified with predict_video.py's; still accepted. -batch_size
# is the training batch in every other tool, hence the warning when it is used here.
OLD_FACE_FLAGS = {'mode': '-mode', 'image_size': '-image_size', 'detect_batch': '-batch_size'}
# Settings that change only the speed, not the faces written.
SPEED_ONLY = ('detect_batch',)


def parse_args(argv=None):
    """The command line as argparse arguments plus `settings` (FaceSettings), `shard` and
    `torch_device` (the checked -device, as torch names it)."""
    parser = console.ArgumentParser(
        prog='python -m preprocess',
        description='Extract every frame with FFmpeg, detect faces with MTCNN, follow each person '
                    'through the video and write one aligned face per frame as OUT_DIR/<video>/00001.jpg '
                    '... plus detections.csv. Resumable: finished videos are skipped, interrupted ones '
                    'redone. Several processes or machines can share the work (-shard, or '
                    'python -m paddle.distributed.launch).')
    parser.add_argument('video_dir', metavar='VIDEO_DIR', help='folder of raw videos (searched recursively; never written)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='output folder, one sub-folder per video')
    parser.add_argument('-anno_folder', metavar='ANNO',
                        help='ABAW annotations, the folder holding Train_Set/ and Validation_Set/ (as in '
                             'training; a folder holding the .txt files directly works too): outputs are '
                             'named after its files, <name>_left/_right from video <name>; videos without '
                             'annotation are processed too (person 1) and counted')
    parser.add_argument('-video_list', metavar='FILE',
                        help='only these outputs, one name a line as in the ABAW test-set list '
                             '(<name>_left/_right: the two people of video <name>)')
    parser.add_argument('-shard', metavar='I/N',
                        help='process only share I (0..N-1) of N of the videos, balanced by size; '
                             'under paddle.distributed.launch the rank and world size are used')
    parser.add_argument('-workers', type=int, default=None,
                        help='detection worker processes (default: CPU cores on cpu, 0 = in-process on gpu)')
    parser.add_argument('-device', default='cpu', help='cpu or gpu (or gpu:N) for face detection, '
                        'as in every tool (cuda, cuda:N: the old spellings)')
    FaceSettings.add_arguments(parser, FACE_FIELDS, OLD_FACE_FLAGS)
    parser.add_argument('-overwrite', action='store_true',
                        help='redo every output, also finished ones (needed when the face settings '
                             'differ from those a finished output was made with)')
    parser.add_argument('-system_ffmpeg', action='store_true',
                        help="use the system's ffmpeg if present instead of imageio-ffmpeg's")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 0:
        parser.error(f'-workers {args.workers}: must be 0 or more')
    if any(arg.split('=')[0] in ('-batch_size', '--batch_size') for arg in (sys.argv[1:] if argv is None else argv)):
        print('warning: -batch_size is the old name of -detect_batch (frames per MTCNN call); '
              'in every other tool -batch_size is the training batch', file=sys.stderr)
    args.torch_device = torch_device(args.device)
    try:
        args.settings = FaceSettings.from_args(args, FACE_FIELDS)
        args.shard = shards.parse_shard(args.shard) if args.shard is not None else None
    except ValueError as err:
        parser.error(str(err))
    return args


def settings_differences(recorded, settings):
    """'-flag recorded -> now' for every face setting that changes the faces written."""
    now = settings.as_dict()
    return [f"{FACE_FLAGS.get(field, '-' + field)} {recorded.get(field)!r} -> {now[field]!r}"
            for field in now if field not in SPEED_ONLY and recorded.get(field) != now[field]]


def check_settings(out_dir, names, settings):
    """Refuse to add outputs made with other face settings beside finished ones: one folder would
    then hold two kinds of faces, and skipping them would hide that the settings changed."""
    for name in names:
        manifest = pipeline.read_manifest(out_dir, name) if pipeline.is_done(out_dir, name) else None
        if manifest is None or 'settings' not in manifest:
            continue
        changed = settings_differences(manifest['settings'], settings)
        if changed:
            raise UsageError(f"OUT_DIR {out_dir}: {name} was made with other face settings "
                             f"({', '.join(changed)}); add -overwrite to redo every output with the "
                             "new ones, or choose another OUT_DIR")


def frame_count_mismatches(names, label_counts, frames_of):
    """'name: video N frames, annotation M lines' for outputs whose counts differ (nothing is shifted)."""
    lines = []
    for name in names:
        frames = frames_of(name)
        expected = label_counts.get(name)
        if frames is not None and expected is not None and frames != expected:
            lines.append(f"{name}: video {frames} frames, annotation {expected} lines")
    return lines


def main(argv=None):
    """Command-line entry; returns the exit code: 1 when a video failed, 2 for a bad flag or
    input (one `error:` line, see console.py)."""
    return console.run_command(preprocess_videos, argv)


def preprocess_videos(argv=None):
    """Preprocess every planned video of this shard; returns the exit code (1 when a video failed)."""
    args = parse_args(argv)
    console.setup(logging.getLogger('preprocess'))
    plan = plan_run(args)
    share = this_share(args, plan)
    if not args.overwrite:
        check_settings(args.out_dir, [name for _, outputs in share.jobs for name in outputs], args.settings)
    todo, finished = pending_work(args.out_dir, share.jobs, args.overwrite)
    results = process_videos(args, plan, share, todo, finished)
    return report(args, plan, share, finished, results)


Share = collections.namedtuple('Share', ['jobs', 'failures', 'device', 'local_processes', 'label', 'shard'])
Share.__doc__ = """This process's part of the plan: its jobs, the plan problems it reports, the torch device,
how many processes share this machine's cores, the label of its lines ('' when alone) and its Shard."""


def plan_run(args):
    """Check the folders and plan every output (preprocess.jobs.Plan); nothing is written yet."""
    if not os.path.isdir(args.video_dir):
        raise UsageError(f"VIDEO_DIR {args.video_dir}: no such folder")
    if args.anno_folder is not None and not os.path.isdir(args.anno_folder):
        raise UsageError(f"-anno_folder {args.anno_folder}: no such folder")
    if is_inside(args.out_dir, args.video_dir):
        raise UsageError(f"OUT_DIR {args.out_dir} is inside VIDEO_DIR {args.video_dir}; "
                         "outputs must not be written into the input folder")
    videos = find_videos(args.video_dir)
    if not videos:
        raise PlanError(f"VIDEO_DIR {args.video_dir}: no video files (looked for {' '.join(VIDEO_EXTENSIONS)})")
    names = read_video_list(args.video_list) if args.video_list else None
    plan = plan_jobs(videos, args.anno_folder, names)
    check_writable_dir(args.out_dir, flag='OUT_DIR')
    return plan


def this_share(args, plan):
    """The jobs of this process (all of them without -shard or a launcher) and how it runs them."""
    shard = args.shard or shards.launcher_shard()
    if shard is None:
        pipeline.clean_stale_temporaries(args.out_dir)  # what a killed run left never looks finished
        return Share(plan.jobs, list(plan.problems), args.torch_device, 1, '', None)
    jobs = shards.split_by_size(plan.jobs, shard.count)[shard.index]
    # Every shard finds the same plan problems; shard 0 reports them.
    failures = list(plan.problems) if shard.index == 0 else []
    device, local_processes = args.torch_device, 1
    if shard.launcher:
        local_processes = processes_on_this_machine()
        gpu = shards.launcher_gpu()
        if device == 'cuda' and gpu is not None:
            device = f'cuda:{gpu}'
        shards.forget_report(args.out_dir, shard)
        if shard.index == 0:
            shards.remove_old_run_folders(args.out_dir)
    own_names = [name for _, outputs in jobs for name in outputs]
    # A shard cleans only its own leftovers: the others' temporary folders are work in progress.
    pipeline.clean_stale_temporaries(args.out_dir, names=own_names)
    return Share(jobs, failures, device, local_processes, f"shard {shard.index}/{shard.count}: ", shard)


def pending_work(out_dir, jobs, overwrite=False):
    """(todo: [(video path, {output: side})] not finished yet (every one with `overwrite`),
    finished: output names already done)."""
    todo, finished = [], []
    for path, outputs in jobs:
        pending = {name: side for name, side in outputs.items()
                   if overwrite or not pipeline.is_done(out_dir, name)}
        finished += [name for name in outputs if name not in pending]
        if pending:
            todo.append((path, pending))
    return todo, finished


def process_videos(args, plan, share, todo, finished):
    """Run the face pipeline on every video of `todo`. A bad video is named in share.failures and
    the run goes on; a usage error or a bug stops it (faceloop.VIDEO_FAILURES). Returns the counts:
    done, faces, frames_of {output: frames}, no_second_person [output]."""
    cores = max(1, len(os.sched_getaffinity(0)) // share.local_processes)
    workers = min(cores, default_workers(share.device)) if args.workers is None else args.workers
    results = {'done': 0, 'faces': 0, 'frames_of': {}, 'no_second_person': []}
    if todo:
        print(f"{share.label}{len(todo)} video(s) to process, {len(finished)} output(s) already done; "
              f"device {share.device}, {workers} worker process(es)", file=sys.stderr)
        with Detector(args.settings, device=share.device, workers=workers,
                      torch_threads=max(1, cores // max(1, workers))) as detector:
            overall = console.progress(todo, desc='videos', unit='video', position=0)
            for path, outputs in overall:
                try:
                    summaries = process_one(args, plan, detector, path, outputs)
                except VIDEO_FAILURES as err:
                    share.failures.append(video_failure(', '.join(outputs), err, detector))
                    continue
                if not console.stderr_is_terminal():  # no bars in a log: one line per video
                    tqdm.write(f"{', '.join(outputs)}: {sum(s['faces'] for s in summaries.values())} faces in "
                               f"{next(iter(summaries.values()))['frames']} frames", file=sys.stderr)
                for name, summary in summaries.items():
                    results['done'] += 1
                    results['faces'] += summary['faces']
                    results['frames_of'][name] = summary['frames']
                    if summary['side'] in ('left', 'right') and summary['person'] is None:
                        results['no_second_person'].append(name)
            overall.close()
    for name in finished:
        manifest = pipeline.read_manifest(args.out_dir, name)
        results['frames_of'][name] = manifest.get('frames') if manifest else None
    return results


def process_one(args, plan, detector, path, outputs):
    """The face pipeline on one video, with a frame progress bar; {output: summary}."""
    total = probe_frame_count(path, prefer_system=args.system_ffmpeg)
    extra = {name: {'annotation_frames': plan.label_counts[name]}
             for name in outputs if name in plan.label_counts}
    with console.progress(total=total or None, desc=', '.join(outputs)[:40], unit='frame', position=1,
                          leave=False) as bar:
        return pipeline.process_video(path, args.out_dir, outputs, detector=detector,
                                      prefer_system_ffmpeg=args.system_ffmpeg, progress=bar.update,
                                      manifest_extra=extra)


def report(args, plan, share, finished, results):
    """Print this process's summary (and, on launcher rank 0, every shard's); the exit code."""
    own_names = [name for _, outputs in share.jobs for name in outputs]
    summary = {'shard': share.label.rstrip(': '), 'done': results['done'], 'finished_before': len(finished),
               'faces': results['faces'],
               'unannotated': len([name for name in plan.unannotated if name in own_names]),
               'failures': share.failures,
               'mismatches': frame_count_mismatches(own_names, plan.label_counts, results['frames_of'].get),
               'no_second_person': results['no_second_person']}
    annotated = args.anno_folder is not None
    print_summary(summary, annotated)
    if share.shard is None or not share.shard.launcher:
        return 1 if share.failures else 0
    reports = shards.gather_reports(args.out_dir, share.shard, summary)
    if share.shard.index == 0:
        total = {key: sum(r[key] for r in reports) for key in ('done', 'finished_before', 'faces', 'unannotated')}
        total.update({key: [line for r in reports for line in r[key]]
                      for key in ('failures', 'mismatches', 'no_second_person')})
        total['shard'] = f"all {share.shard.count} shards"
        print_summary(total, annotated)
    return 1 if any(r['failures'] for r in reports) else 0


def print_summary(report, annotated):
    """The run's (or shard's) summary on stderr: counts, frame-count mismatches, failures."""
    prefix = f"{report['shard']}: " if report['shard'] else ''
    unannotated = (f"; {report['unannotated']} output(s) have no annotation (processed as single-subject "
                   "videos, person 1)" if annotated else '')
    print(f"{prefix}done: {report['done']} output(s) written, {report['finished_before']} already finished; "
          f"{report['faces']} faces written{unannotated}; {len(report['failures'])} failure(s)", file=sys.stderr)
    for line in report['mismatches']:
        print(f"frame count differs from the annotation (nothing shifted): {line}", file=sys.stderr)
    for name in report['no_second_person']:
        print(f"warning: {name}: fewer than two people tracked; no faces for this side", file=sys.stderr)
    for failure in report['failures']:
        print(f"failed: {failure}", file=sys.stderr)
