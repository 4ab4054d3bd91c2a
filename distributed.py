"""One process or several: rank and world size, the device, the collectives
that training and evaluation need (no-ops in a single process, where Paddle's would raise), and
the watch that ends a multi-process run cleanly when one of its processes or nodes is lost.

Why a watch of our own: when a process of a gloo (CPU) run dies, the others fail inside the next
collective about 2 s later, in the backward pass with a C++ abort that Python cannot catch, and a
silent peer (frozen, or its node unplugged) makes them wait gloo's 30 s or NCCL's much longer
timeout. Rank 0 keeps one TCP connection to every other process (PeerWatch): a closed connection
means that process ended, `PEER_TIMEOUT` seconds without its heartbeat mean it is lost; either
way every process left prints one `error` line naming the lost rank and its node with the command
to continue, and exits with code 1 within that bound, never inside a checkpoint write.
A run's log files are train_log.py's.
"""
import contextlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time

import numpy as np
import paddle

from errors import CfcspError, TrainingError, UsageError


def world():
    """(rank, world_size) as set by paddle.distributed.launch (0, 1 when run directly)."""
    return paddle.distributed.get_rank(), paddle.distributed.get_world_size()


def setup_device(config, logger):
    """Select the device from DEVICE (empty: GPU when Paddle sees one, else CPU); returns 'gpu' or 'cpu'."""
    wanted = config.DEVICE or ''
    has_cuda = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if not wanted:
        wanted = 'gpu' if has_cuda else 'cpu'
    if wanted == 'gpu' and not has_cuda:
        raise UsageError("-device gpu: this Paddle has no CUDA support or no GPU is visible")
    if wanted == 'gpu':
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().device_id}")
    else:
        paddle.set_device('cpu')
    logger.info(f"device: {wanted}")
    return wanted


def all_reduce_mean(value, world_size):
    """The mean over the processes of a float, or of each float of a list in one collective
    (the value itself in one process)."""
    if world_size == 1:
        return value
    many = isinstance(value, (list, tuple))
    tensor = paddle.to_tensor(list(value) if many else [value], dtype='float64')
    paddle.distributed.all_reduce(tensor)
    means = [float(v) / world_size for v in tensor.numpy()]
    return means if many else means[0]


def all_gather_array(array, world_size):
    """Every process's array, concatenated in rank order (the array itself in one process)."""
    if world_size == 1:
        return array
    parts = []
    paddle.distributed.all_gather(parts, paddle.to_tensor(array))
    return np.concatenate([p.numpy() for p in parts])


def rank0_file(path, world_size, flag):
    """Rank 0's `path` (a file it chose, or None) on every rank; a UsageError on a node that cannot
    read it (its -output is not the folder rank 0 writes)."""
    if world_size == 1:
        return path
    chosen = []
    paddle.distributed.all_gather_object(chosen, path)
    path = chosen[0]
    if path is not None and not os.path.isfile(path):
        raise UsageError(f"{flag}: rank 0 continues from {path}, which this node cannot read: "
                         "-output must be one folder every node reads (docs/multinode.md)")
    return path


# ---------------------------------------------------------------------------------------------
# Several processes: joining the group, and the watch over its members

HEARTBEAT_SECONDS = 1.0
_ENDING = threading.Lock()   # taken by whoever ends the process first: the run itself or the watch
_WRITING = threading.RLock()  # held while files are written; the watch waits for it before exiting
_watch = None


def join_group(timeout):
    """Join the launcher's process group and start the PeerWatch (`timeout`: PEER_TIMEOUT)."""
    global _watch
    if not timeout or timeout <= 0:
        raise UsageError(f"PEER_TIMEOUT {timeout}: must be a number of seconds above 0")
    paddle.distributed.init_parallel_env()
    rank, world_size = world()
    host = os.environ.get('PADDLE_CURRENT_ENDPOINT', '127.0.0.1:0').rsplit(':', 1)[0]
    listener = None
    if rank == 0:
        listener = socket.create_server((host, 0), backlog=world_size)
    me = {'pod': os.environ.get('POD_NAME', str(rank)), 'host': host,
          'port': listener.getsockname()[1] if listener else None}
    members = []
    paddle.distributed.all_gather_object(members, me)
    # Nodes numbered in rank order, as the launchers' --rank numbers them.
    pods = list(dict.fromkeys(m['pod'] for m in members))
    places = [f"node {pods.index(m['pod'])} ({m['host']})" for m in members]
    _watch = PeerWatch(rank, world_size, places, (members[0]['host'], members[0]['port']), timeout, listener)
    _watch.start()
    signal.signal(signal.SIGTERM, _sigterm_handler(signal.getsignal(signal.SIGTERM)))
    return _watch


def _sigterm_handler(previous):
    """SIGTERM while this process is already ending (its own error, or a peer's) is ignored: the
    launcher sends it to every process as soon as one has failed, and a process it kills reports
    -15 (exit 241) to the user instead of the run's own exit code. Otherwise SIGTERM does what it
    did before (Paddle's handler is not a Python one, so the default: the process ends)."""
    def on_sigterm(signum, frame):
        if _ENDING.locked():
            return
        signal.signal(signum, previous if callable(previous) else signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    return on_sigterm


@contextlib.contextmanager
def writing():
    """Files written inside this block are finished before a lost peer ends the process."""
    with _WRITING:
        yield


@contextlib.contextmanager
def announce_end():
    """Tell the other processes how this one's run ended: cleanly, or with the error it raised
    (they then end with that error instead of reporting this process as lost)."""
    try:
        yield
    except CfcspError as err:
        _leave(err.exit_code, str(err))
        raise
    except Exception as err:
        if _watch is not None and _is_lost_peer(err):
            # gloo often notices a closed connection as soon as the watch does; the watch knows
            # which process is gone, so give it time to say so (it ends this process).
            _watch.wait_for_loss()
            _leave(1, f"communication failed: {_first_line(err)}")
            raise TrainingError(f"communication with the other processes failed ({_first_line(err)}); "
                                f"{continue_hint()}") from None
        _leave(1, f"{type(err).__name__}: {_first_line(err)} (traceback in its log)")
        raise
    except BaseException:
        _leave(1, "interrupted")
        raise
    _leave(0, '')


def _first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _is_lost_peer(err):
    """True for the errors gloo and NCCL raise when a peer is gone or silent."""
    text = str(err)
    return isinstance(err, (RuntimeError, OSError)) and any(
        word in text for word in ('gloo', 'Gloo', 'NCCL', 'TIMEOUT', 'Connection reset', 'Connection closed'))


def _leave(code, message):
    if _watch is not None and _watch.ending.acquire(blocking=False):
        _watch.leave(code, message)


def continue_hint(argv=None):
    """How to go on after a lost process: the same launch on every node, resuming."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ('-eval', '--eval') for a in argv):
        return "run the same command again on every node"
    if any(a in ('-resume', '--resume') and argv[i + 1:i + 2] == ['auto'] for i, a in enumerate(argv)):
        return "run the same command again on every node (it has -resume auto)"
    return "run the same command on every node with -resume auto added"


class PeerWatch:
    """Rank 0 and each other rank hold one TCP connection; both ends send a line every
    HEARTBEAT_SECONDS. Lines: `hello RANK`, `beat`, `bye CODE MESSAGE` (the run ended: 0 cleanly),
    `lost MESSAGE` (rank 0 to the others: a process is lost). A connection that closes without
    `bye`, or stays silent for `timeout` seconds, means its process is lost: rank 0 tells the
    others, and every process prints one error line and exits (code 1, or the peer's error code)."""

    def __init__(self, rank, world_size, places, address, timeout, listener=None, exit=os._exit, ending=None):
        self.rank, self.world_size, self.places = rank, world_size, places
        self.address, self.timeout, self.listener = address, float(timeout), listener
        # exit and ending: the process's own, but tests run several "processes" in one.
        self.exit, self.ending = exit, ending or _ENDING
        self.peers = {}  # rank -> socket
        self.buffers, self.heard, self.done = {}, {}, set()
        self.lock = threading.Lock()

    def start(self):
        if self.rank == 0:
            self._accept_all()
        else:
            conn = socket.create_connection(self.address, timeout=self.timeout)
            conn.sendall(f"hello {self.rank}\n".encode())
            self._add(0, conn)
        self.thread = threading.Thread(target=self._run, name='peer-watch', daemon=True)
        self.thread.start()

    def _accept_all(self):
        deadline = time.time() + self.timeout
        waiting = set(range(1, self.world_size))
        while waiting:
            self.listener.settimeout(max(0.01, deadline - time.time()))
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                self._lost(min(waiting), "never connected")
                return
            conn.settimeout(max(0.01, deadline - time.time()))
            line = conn.makefile('rb').readline().decode().split()
            if len(line) == 2 and line[0] == 'hello' and int(line[1]) in waiting:
                waiting.discard(int(line[1]))
                self._add(int(line[1]), conn)
        self.listener.close()

    def _add(self, rank, conn):
        # Reads happen only after select() says there is data; the timeout bounds a send to a
        # peer that stopped reading.
        conn.settimeout(5 * HEARTBEAT_SECONDS)
        self.peers[rank], self.buffers[rank], self.heard[rank] = conn, b'', time.time()

    def _send(self, rank, line):
        try:
            self.peers[rank].sendall(line.encode() + b'\n')
        except OSError:
            pass  # a closed peer shows as end of stream on the next read

    def _run(self):
        last_beat = 0.0
        while True:
            watched = {r: c for r, c in self.peers.items() if r not in self.done}
            if not watched:
                return
            readable, _, _ = select.select(list(watched.values()), [], [], HEARTBEAT_SECONDS / 4)
            for rank, conn in watched.items():
                if conn in readable:
                    self._read(rank, conn)
            now = time.time()
            if now - last_beat >= HEARTBEAT_SECONDS:
                with self.lock:
                    for rank in watched:
                        self._send(rank, 'beat')
                last_beat = now
            for rank in watched:
                if rank not in self.done and now - self.heard[rank] > self.timeout:
                    self._lost(rank, f"was silent for {self.timeout:g} s (PEER_TIMEOUT): frozen, or its node "
                                     f"is down or unreachable")

    def _read(self, rank, conn):
        try:
            data = conn.recv(65536)
        except (socket.timeout, InterruptedError):
            return
        except OSError:
            data = b''
        if not data:
            if rank not in self.done:
                self._lost(rank, "ended without finishing (killed, crashed, or its node went down)")
            return
        self.heard[rank] = time.time()
        self.buffers[rank] += data
        *lines, self.buffers[rank] = self.buffers[rank].split(b'\n')
        for line in lines:
            word, _, rest = line.decode('utf-8', 'replace').partition(' ')
            if word == 'bye':
                code, _, message = rest.partition(' ')
                self.done.add(rank)
                if int(code) != 0:
                    self._end(f"rank {rank} on {self.places[rank]} stopped: {message}", int(code), rank)
            elif word == 'lost' and self.rank != 0:
                self._end(rest, 1, None)

    def wait_for_loss(self):
        """Wait (at most `timeout` seconds and a few heartbeats) for the watch to find a lost peer."""
        deadline = time.time() + self.timeout + 3 * HEARTBEAT_SECONDS
        while time.time() < deadline and not self.ending.locked():
            time.sleep(0.05)
        if self.ending.locked():
            time.sleep(self.timeout + 3 * HEARTBEAT_SECONDS)  # the watch is ending the process

    def _lost(self, rank, why):
        self._end(f"lost rank {rank} on {self.places[rank]}: it {why}; {continue_hint()}", 1, rank)

    def _end(self, message, code, culprit):
        """Stop the process for a lost or failed peer: tell the others (rank 0), let a file being
        written finish, print one error line, exit. Nothing, if the run is already ending itself."""
        if not self.ending.acquire(blocking=False):
            return
        if self.rank == 0:
            with self.lock:
                for rank in self.peers:
                    if rank not in self.done and rank != culprit:
                        self._send(rank, f"lost {message}")
        # Bounded: a write never waits on another process.
        if _WRITING.acquire(timeout=max(self.timeout, 60)):
            _WRITING.release()
        label = f"error (rank {self.rank})" if self.rank else 'error'
        sys.stdout.flush()
        print(f"{label}: {message}", file=sys.stderr, flush=True)
        self.exit(code)
        self.done.update(self.peers)  # reached only when `exit` returns (tests)

    def leave(self, code, message):
        """This process's run ended (code 0: cleanly): say so to every peer still listening."""
        text = ' '.join(message.split())
        with self.lock:
            for rank in list(self.peers):
                if rank not in self.done:
                    self._send(rank, f"bye {code} {text}")
        self.done.update(self.peers)
