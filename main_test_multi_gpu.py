"""Write every frame's predicted label, pred_<rank>.txt, as the release's test script did
(N processes: python -m paddle.distributed.launch --nproc_per_node N (CPU) or --gpus 0,1,2,3)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_env  # noqa: F401,E402  (thread env vars; must run before paddle is imported)

import frame_predictions  # noqa: E402

if __name__ == '__main__':
    sys.exit(frame_predictions.main())
