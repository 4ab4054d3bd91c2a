"""`python -m preprocess VIDEO_DIR OUT_DIR ...`: raw videos to aligned 224x224 face folders."""
import argparse
import os
import sys

from fileio import check_writable_dir, is_inside
from labels import AnnotationError, read_annotation, split_person
from preprocess.video import VIDEO_EXTENSIONS, is_video_file, probe_frame_count

ANNOTATION_SUBSETS = ('Train_Set', 'Validation_Set')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m preprocess',
        description='Extract every frame with FFmpeg, detect faces with MTCNN and write one aligned '
                    'face per frame as OUT_DIR/<video>/00001.jpg ... plus detections.csv. Resumable: '
                    'finished videos are skipped, interrupted ones redone.')
    parser.add_argument('video_dir', metavar='VIDEO_DIR', help='folder of raw videos (searched recursively; never written)')
    parser.add_argument('out_dir', metavar='OUT_DIR', help='output folder, one sub-folder per video')
    parser.add_argument('--anno_folder', metavar='ANNO',
                        help='ABAW annotation folder (ANNO/Train_Set, ANNO/Validation_Set or ANNO itself): '
                             'only the annotated videos are produced, <name>_left/_right from video <name>')
    parser.add_argument('--workers', type=int, default=None,
                        help='detection worker processes (default: CPU cores on cpu, 0 = in-process on cuda)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda (or cuda:N)')
    parser.add_argument('--batch_size', type=int, default=8, help='frames per MTCNN call')
    parser.add_argument('--mode', choices=('align', 'crop'), default='align',
                        help='align: 5-point similarity alignment (default); crop: box with margin')
    parser.add_argument('--image_size', type=int, default=224)
    parser.add_argument('--margin', type=float, default=0.2, help="box margin per side for --mode crop")
    parser.add_argument('--min_prob', type=float, default=0.9, help='faces below this MTCNN probability are ignored')
    parser.add_argument('--min_face_size', type=int, default=20, help='smallest face MTCNN looks for, in pixels')
    parser.add_argument('--jpeg_quality', type=int, default=95, help='quality of the face JPEGs (1-100)')
    parser.add_argument('--system_ffmpeg', action='store_true',
                        help="use the system's ffmpeg if present instead of imageio-ffmpeg's")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch_size {args.batch_size}: must be at least 1')
    if args.workers is not None and args.workers < 0:
        parser.error(f'--workers {args.workers}: must be 0 or more')
    if not 1 <= args.jpeg_quality <= 100:
        parser.error(f'--jpeg_quality {args.jpeg_quality}: must be between 1 and 100')
    if not (args.device == 'cpu' or args.device.startswith('cuda')):
        parser.error(f"--device {args.device}: choose cpu or cuda")
    return args


def find_videos(video_dir):
    """{stem: path} of every video under video_dir; two videos with one stem are an error."""
    videos = {}
    for root, dirs, files in os.walk(video_dir):
        dirs.sort()
        for name in sorted(files):
            if not is_video_file(name) or name.startswith('.'):
                continue
            stem = os.path.splitext(name)[0]
            path = os.path.join(root, name)
            if stem in videos:
                raise SystemExit(f"error: VIDEO_DIR has two videos named '{stem}': {videos[stem]} and {path}")
            videos[stem] = path
    return videos


def annotation_files(anno_folder):
    """{output name: annotation path} from ANNO/Train_Set, ANNO/Validation_Set and ANNO itself."""
    found = {}
    for folder in [os.path.join(anno_folder, sub) for sub in ANNOTATION_SUBSETS] + [anno_folder]:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith('.txt') and not name.startswith('.'):
                found.setdefault(os.path.splitext(name)[0], os.path.join(folder, name))
    return found


def plan_jobs(videos, anno_folder):
    """([(video path, {output: side})], [problems], {output: annotation frame count})."""
    if anno_folder is None:
        return [(path, {stem: None}) for stem, path in videos.items()], [], {}
    annotations = annotation_files(anno_folder)
    if not annotations:
        raise SystemExit(f"error: --anno_folder {anno_folder}: no .txt annotation files in it, "
                         f"{'/'.join(ANNOTATION_SUBSETS)} or itself")
    jobs, problems, label_counts = {}, [], {}
    for output, path in annotations.items():
        raw, side = split_person(output)
        if raw not in videos:
            problems.append(f"{output}: no video '{raw}.*' in VIDEO_DIR for annotation {path}")
            continue
        try:
            label_counts[output] = len(read_annotation(path))
        except AnnotationError as err:
            problems.append(str(err))
            continue
        jobs.setdefault(raw, {})[output] = side
    return [(videos[raw], outputs) for raw, outputs in sorted(jobs.items())], problems, label_counts


def main(argv=None):
    args = parse_args(argv)
    if not os.path.isdir(args.video_dir):
        raise SystemExit(f"error: VIDEO_DIR {args.video_dir}: no such folder")
    if args.anno_folder is not None and not os.path.isdir(args.anno_folder):
        raise SystemExit(f"error: --anno_folder {args.anno_folder}: no such folder")
    if is_inside(args.out_dir, args.video_dir):
        raise SystemExit(f"error: OUT_DIR {args.out_dir} is inside VIDEO_DIR {args.video_dir}; "
                         "outputs must not be written into the input folder")
    videos = find_videos(args.video_dir)
    if not videos:
        raise SystemExit(f"error: VIDEO_DIR {args.video_dir}: no video files "
                         f"(looked for {' '.join(VIDEO_EXTENSIONS)})")
    check_writable_dir(args.out_dir, flag='OUT_DIR')

    # Heavy imports only once the arguments are known to be good, so mistakes are reported fast.
    from tqdm import tqdm

    from preprocess import pipeline

    jobs, failures, label_counts = plan_jobs(videos, args.anno_folder)
    pipeline.clean_stale_temporaries(args.out_dir)
    todo = []
    skipped = 0
    for path, outputs in jobs:
        pending = {name: side for name, side in outputs.items() if not pipeline.is_done(args.out_dir, name)}
        skipped += len(outputs) - len(pending)
        if pending:
            todo.append((path, pending))

    workers = args.workers
    if workers is None:
        workers = 0 if args.device.startswith('cuda') else (os.cpu_count() or 1)
    aligner_kwargs = dict(device=args.device, mode=args.mode, image_size=args.image_size,
                          margin=args.margin, min_prob=args.min_prob, min_face_size=args.min_face_size)
    done = frames = faces = 0
    if todo:
        print(f"{len(todo)} video(s) to process, {skipped} output(s) already done; "
              f"device {args.device}, {workers} worker process(es)", file=sys.stderr)
        with pipeline.Detector(aligner_kwargs, workers=workers) as detector:
            overall = tqdm(todo, desc='videos', unit='video', position=0)
            for path, outputs in overall:
                names = ', '.join(outputs)
                try:
                    total = probe_frame_count(path, prefer_system=args.system_ffmpeg)
                    extra = {name: {'annotation_frames': label_counts[name]}
                             for name in outputs if name in label_counts}
                    with tqdm(total=total or None, desc=names[:40], unit='frame', position=1,
                              leave=False) as bar:
                        summaries = pipeline.process_video(
                            path, args.out_dir, outputs, detector=detector, batch_size=args.batch_size,
                            jpeg_quality=args.jpeg_quality, prefer_system_ffmpeg=args.system_ffmpeg,
                            progress=bar.update, manifest_extra=extra)
                except pipeline.VIDEO_FAILURES as err:
                    failures.append(pipeline.video_failure(names, err, detector))
                    continue
                for name, summary in summaries.items():
                    done += 1
                    frames += summary['frames']
                    faces += summary['faces']
                    expected = label_counts.get(name)
                    if expected is not None and expected != summary['frames']:
                        tqdm.write(f"warning: {name}: video has {summary['frames']} frames, "
                                   f"annotation has {expected} lines", file=sys.stderr)
            overall.close()

    print(f"done: {done} output(s) written, {skipped} already finished; {frames} frames decoded, "
          f"{faces} faces written; {len(failures)} failure(s)", file=sys.stderr)
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0

