"""Raw videos to aligned face folders: FFmpeg decoding (video), MTCNN detection and alignment (faces),
the resumable per-video job (pipeline) and the `python -m preprocess` command (cli)."""
