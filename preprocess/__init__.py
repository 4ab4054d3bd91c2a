"""Raw videos to aligned face folders: FFmpeg decoding (video), face settings, MTCNN detection and
alignment (faces), people followed through a video (tracking), the face loop shared with
predict_video.py (faceloop), the resumable per-video job (pipeline), which videos become which
outputs (jobs), splitting a run over processes and machines (shards) and the `python -m preprocess`
command (cli)."""
