"""Train or evaluate a CFC-SP Swin model (N processes: python -m paddle.distributed.launch --nproc_per_node N (CPU) or --gpus 0,1,2,3;
several machines: add --nnodes M --master IP:PORT --rank R on each, see docs/multinode.md)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_env  # noqa: F401,E402  (thread env vars; must run before paddle is imported)

import engine  # noqa: E402

if __name__ == '__main__':
    sys.exit(engine.main(distributed=True,
                         description='CFC-SP Swin (multi processes)'))
