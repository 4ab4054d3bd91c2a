"""`python -m preprocess ...`, or `python preprocess/__main__.py ...` where a launcher needs a script
(python -m paddle.distributed.launch ... preprocess/__main__.py VIDEO_DIR OUT_DIR ...)."""
import os
import sys

if not __package__:
    # Run as a script: its own folder would come first on the path; the repository root must.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from preprocess.cli import main  # noqa: E402

# Guarded: detection worker processes (spawn) import a script that was started by path.
if __name__ == '__main__':
    sys.exit(main())
