"""distributed.PeerWatch without Paddle: rank 0 and its peers over real sockets on 127.0.0.1, with
the process exit replaced by a recorder. A peer that vanishes or falls silent is named as lost
with how to go on; a peer that ends with an error passes it on; a clean end is no alarm."""
import socket
import threading
import time

import pytest

import distributed
from distributed import PeerWatch

PLACES = ['node 0 (127.0.0.1)', 'node 1 (127.0.0.1)', 'node 1 (127.0.0.1)']


class Exit:
    def __init__(self):
        self.codes, self.event = [], threading.Event()

    def __call__(self, code):
        self.codes.append(code)
        self.event.set()


STARTED = []


@pytest.fixture(autouse=True)
def stop_watches():
    """No watch of a test outlives it."""
    yield
    while STARTED:
        watch = STARTED.pop()
        watch.done.update(watch.peers)
        watch.thread.join(5)
        for conn in watch.peers.values():
            conn.close()


def start_group(world_size, timeout=5.0):
    """Rank 0's watch and the peers' watches, connected. -> ({rank: watch}, {rank: Exit})"""
    listener = socket.create_server(('127.0.0.1', 0))
    exits = {rank: Exit() for rank in range(world_size)}
    watches = {rank: PeerWatch(rank, world_size, PLACES, ('127.0.0.1', listener.getsockname()[1]), timeout,
                               listener if rank == 0 else None, exit=exits[rank], ending=threading.Lock())
               for rank in range(world_size)}
    # Rank 0 accepts in start(); the peers connect meanwhile.
    peers = [threading.Thread(target=watches[rank].start) for rank in range(1, world_size)]
    for thread in peers:
        thread.start()
    watches[0].start()
    for thread in peers:
        thread.join()
    STARTED.extend(watches.values())
    return watches, exits


def vanish(watch):
    """The process of `watch` is gone: its watch stops and its connections close without goodbye."""
    watch.done.update(watch.peers)
    time.sleep(0.5)
    for conn in watch.peers.values():
        conn.shutdown(socket.SHUT_RDWR)


def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith('error')]


def test_a_vanished_peer_is_named_with_the_command_to_continue(capsys, monkeypatch):
    monkeypatch.setattr('sys.argv', ['main_multi_gpu.py', '-cfg', 'x.yaml'])
    watches, exits = start_group(3)
    vanish(watches[2])
    assert exits[0].event.wait(5) and exits[0].codes == [1]
    assert exits[1].event.wait(5) and exits[1].codes == [1]  # rank 0 told rank 1 before ending
    message = ("lost rank 2 on node 1 (127.0.0.1): it ended without finishing (killed, crashed, or its node "
               "went down); run the same command on every node with -resume auto added")
    assert sorted(error_lines(capsys)) == [f"error (rank 1): {message}", f"error: {message}"]


def test_a_silent_peer_is_lost_after_the_timeout(capsys):
    watches, exits = start_group(2, timeout=1.5)
    began = time.time()
    watches[1].done.add(0)  # rank 1's watch stops: no more heartbeats, the connection stays open
    assert exits[0].event.wait(10)
    assert 1.5 <= time.time() - began < 6
    assert 'lost rank 1 on node 1 (127.0.0.1): it was silent for 1.5 s (PEER_TIMEOUT)' in error_lines(capsys)[0]


def test_a_peer_ending_with_an_error_passes_it_on_and_a_clean_end_is_no_alarm(capsys):
    watches, exits = start_group(3)
    watches[1].leave(0, '')  # finished cleanly
    watches[2].leave(2, 'DATA_FOLDER x: folder does not exist')
    assert exits[0].event.wait(5) and exits[0].codes == [2]
    assert error_lines(capsys)[0] == "error: rank 2 on node 1 (127.0.0.1) stopped: DATA_FOLDER x: folder does not exist"
    vanish(watches[1])
    assert exits[0].codes == [2] and not exits[1].codes


def test_a_file_being_written_is_finished_before_the_process_ends(monkeypatch):
    watches, exits = start_group(2)
    with distributed.writing():
        vanish(watches[1])
        assert not exits[0].event.wait(1.0)  # waits for the write
    assert exits[0].event.wait(5)


@pytest.mark.parametrize('argv, hint', [
    (['-cfg', 'a.yaml'], 'run the same command on every node with -resume auto added'),
    (['-resume', 'auto'], 'run the same command again on every node (it has -resume auto)'),
    (['-eval', '-pretrained', 'x.pdparams'], 'run the same command again on every node'),
])
def test_continue_hint(argv, hint):
    assert distributed.continue_hint(argv) == hint
