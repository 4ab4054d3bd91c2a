"""What `python -m paddle.distributed.launch` tells the processes it starts, read from the
environment only (no Paddle import), so that CPU thread settings (cpu_env), data loading and
preprocessing, whose detection runs on torch, agree on it."""
import os


def processes_on_this_machine(environ=os.environ):
    """How many processes the launcher started on this machine, this one included (1 when run
    directly); they share its cores. PADDLE_LOCAL_SIZE counts this machine's; a launcher that
    does not set it runs on one machine, so PADDLE_TRAINERS_NUM, all processes, is the same."""
    for name in ('PADDLE_LOCAL_SIZE', 'PADDLE_TRAINERS_NUM'):
        value = environ.get(name, '')
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1
