"""A run's log, as the release wrote it (PaddleViT facial_expression/utils.py get_logger and
write_log, main_multi_gpu.py train/validate), plus the command line at the top and the fatal
error at the end.

Files in the output folder:
- `log_<rank>.txt`: what that process saw (its own loss and accuracy);
- `log.txt` (rank 0, and its stdout): the values averaged over the processes, each line marked
  `MASTER_LOG`;
- `log_all.txt`: both, every process appending, with the release's `%m%d %I:%M:%S %p` time stamps.
Processes other than rank 0 also print their own lines on stdout (the launcher's workerlog.N).

Message formats are the release's; `train_steps` says which steps are logged (REPORT_FREQ counting
from step 0, and the last step of the epoch).
"""
import contextlib
import logging
import math
import os
import shlex
import sys
import time
import traceback

import numpy as np

from distributed import all_reduce_mean
from errors import CfcspError

FORMAT = '%(asctime)s %(message)s'
ALL_DATEFMT = '%m%d %I:%M:%S %p'  # the release's logging.basicConfig for log_all.txt
MASTER_MARK = 'MASTER_LOG '


class RunLog:
    """The release's local and master loggers in one object. `write(local, master)` is its
    write_log; `info`/`warning` write one message to both, so the helpers that take a logger
    (checkpoints, loader, device setup) log through it."""

    def __init__(self, output_dir, rank, stream=None):
        self.rank = rank
        name = f"cfcsp.run.{id(self)}"
        self.local = self._logger(f"{name}.local")
        self.master = self._logger(f"{name}.master") if rank == 0 else None
        self._handlers = []
        plain = logging.Formatter(FORMAT)
        if output_dir:
            stamped = logging.Formatter(FORMAT, ALL_DATEFMT)
            everything = self._file(os.path.join(output_dir, 'log_all.txt'), stamped)
            self._attach(self.local, self._file(os.path.join(output_dir, f'log_{rank}.txt'), plain), everything)
            if self.master is not None:
                self._attach(self.master, self._file(os.path.join(output_dir, 'log.txt'), plain), everything)
        console = logging.StreamHandler(stream or sys.stdout)
        console.setFormatter(plain)
        self._attach(self.master if self.master is not None else self.local, console)

    @staticmethod
    def _logger(name):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        return logger

    def _file(self, path, formatter):
        handler = logging.FileHandler(path, encoding='utf-8')
        handler.setFormatter(formatter)
        self._handlers.append(handler)
        return handler

    def _attach(self, logger, *handlers):
        for handler in handlers:
            logger.addHandler(handler)
            if handler not in self._handlers:
                self._handlers.append(handler)

    def write(self, local, master=None, level=logging.INFO):
        """The release's write_log: `local` to this process's log, `master` (default: `local`) to
        rank 0's, prefixed MASTER_LOG."""
        self.local.log(level, local)
        if self.master is not None:
            self.master.log(level, MASTER_MARK + (local if master is None else master))

    def info(self, message):
        self.write(message)

    def warning(self, message):
        self.write(message, level=logging.WARNING)

    def command(self, argv):
        """First line: how the run was started, to repeat it."""
        self.write(f"----- command: {shlex.join([os.path.basename(sys.executable)] + list(argv))}")

    def fatal(self, err):
        """Last line when the run fails: the error as the console shows it (and, for an error
        this project did not expect, the traceback, which the console shows on its own)."""
        if isinstance(err, CfcspError):
            text = f"error: {err}"
        elif isinstance(err, KeyboardInterrupt):
            text = "error: interrupted"
        else:
            text = "error: " + ''.join(traceback.format_exception(type(err), err, err.__traceback__)).rstrip()
        for logger in (self.local, self.master):
            if logger is not None:
                for handler in logger.handlers:
                    if isinstance(handler, logging.FileHandler):
                        handler.handle(logger.makeRecord(logger.name, logging.CRITICAL, '', 0,
                                                         (MASTER_MARK if logger is self.master else '') + text,
                                                         None, None))

    @contextlib.contextmanager
    def recording_failure(self):
        """Around a run: an exception that ends it is the log's last line; the files are closed."""
        try:
            yield self
        except BaseException as err:
            self.fatal(err)
            raise
        finally:
            self.close()

    def close(self):
        for logger in (self.local, self.master):
            if logger is not None:
                logger.handlers.clear()
        for handler in self._handlers:
            handler.close()
        self._handlers = []


class AverageMeter:
    """The release's utils.AverageMeter: the mean of values each standing for n samples."""

    def __init__(self):
        self.sum, self.cnt, self.avg = 0.0, 0.0, 0.0

    def update(self, value, n=1):
        self.sum += value * n
        self.cnt += n
        if self.cnt:
            self.avg = self.sum / self.cnt


def batch_accuracy(logits, labels):
    """Top-1 accuracy of one batch, as paddle.metric.accuracy on the softmax (0 for no rows)."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        return 0.0
    return float((logits.argmax(axis=1) == labels).mean())


def should_log_train_step(batch_id, num_batches, report_freq):
    """The release logged steps 0, REPORT_FREQ, 2*REPORT_FREQ, ... and the epoch's last step
    (REPORT_FREQ 0, which made the release divide by zero: the last step only)."""
    return (report_freq and batch_id % report_freq == 0) or batch_id + 1 == num_batches


class TrainProgress:
    """One epoch's loss and accuracy meters, per process and averaged over the processes, and
    the release's step lines."""

    def __init__(self, log, epoch, total_epochs, num_batches, report_freq, world_size):
        self.log, self.epoch, self.total_epochs = log, epoch, total_epochs
        self.num_batches, self.report_freq, self.world_size = num_batches, report_freq, world_size
        self.loss, self.acc = AverageMeter(), AverageMeter()
        self.master_loss, self.master_acc = AverageMeter(), AverageMeter()

    def update(self, batch_id, loss_value, acc, batch_size, lr):
        """Record one step; returns the loss averaged over the processes (for the NaN check)."""
        master_loss, master_acc, master_batch = all_reduce_mean([loss_value, acc, batch_size], self.world_size)
        self.master_loss.update(master_loss, master_batch)
        self.master_acc.update(master_acc, master_batch)
        self.loss.update(loss_value, batch_size)
        self.acc.update(acc, batch_size)
        if math.isfinite(master_loss) and should_log_train_step(batch_id, self.num_batches, self.report_freq):
            general = (f"Epoch[{self.epoch:03d}/{self.total_epochs:03d}], "
                       f"Step[{batch_id:04d}/{self.num_batches:04d}], Lr: {lr:.6e}, ")
            self.log.write(general + f"Loss: {loss_value:.4f} ({self.loss.avg:.4f}), Avg Acc: {self.acc.avg:.4f}",
                           general + f"Loss: {master_loss:.4f} ({self.master_loss.avg:.4f}), "
                                     f"Avg Acc: {self.master_acc.avg:.4f}")
        return master_loss

    def end(self, lr, seconds):
        """The release's end-of-epoch line (its missing separator before 'Train Loss' included)."""
        general = f"----- Epoch[{self.epoch:03d}/{self.total_epochs:03d}], Lr: {lr:.6e}, time: {seconds:.2f}"
        self.log.write(general + f"Train Loss: {self.loss.avg:.4f}, Train Acc: {self.acc.avg:.4f}",
                       general + f"Train Loss: {self.master_loss.avg:.4f}, Train Acc: {self.master_acc.avg:.4f}")


def format_duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ValidationProgress:
    """Validation or -eval, batch by batch: the release's `Step[...], Avg Loss, Avg Acc@1` line
    every REPORT_FREQ batches from batch 0, each followed by the time left. Loss and accuracy
    count the frames labelled in the model's classes (all of them during training)."""

    def __init__(self, log, num_batches, report_freq, world_size):
        self.log, self.num_batches, self.report_freq, self.world_size = log, num_batches, report_freq, world_size
        self.loss, self.acc = AverageMeter(), AverageMeter()
        self.master_loss, self.master_acc = AverageMeter(), AverageMeter()
        self.start = time.time()

    def update(self, batch_id, logits, labels):
        logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels).reshape(-1)
        known = labels >= 0
        count = int(known.sum())
        loss = _cross_entropy(logits[known], labels[known]) if count else 0.0
        acc = batch_accuracy(logits[known], labels[known])
        master_loss, master_acc, master_count = all_reduce_mean([loss, acc, count], self.world_size)
        self.master_loss.update(master_loss, master_count)
        self.master_acc.update(master_acc, master_count)
        self.loss.update(loss, count)
        self.acc.update(acc, count)
        if self.report_freq and batch_id % self.report_freq == 0:
            step = f"Step[{batch_id:04d}/{self.num_batches:04d}], "
            self.log.write(step + f"Avg Loss: {self.loss.avg:.4f}, Avg Acc@1: {self.acc.avg:.4f}",
                           step + f"Avg Loss: {self.master_loss.avg:.4f}, Avg Acc@1: {self.master_acc.avg:.4f}")
            done = batch_id + 1
            left = (time.time() - self.start) / done * (self.num_batches - done)
            self.log.write(f"----- {done}/{self.num_batches} batches, time left {format_duration(left)}")

    def seconds(self):
        return time.time() - self.start


def _cross_entropy(logits, labels):
    """Mean cross-entropy of float64 logits (what paddle.nn.CrossEntropyLoss gave the release)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def validation_summary(log, prefix, local, master, seconds):
    """The release's closing validation line: prefix '----- Validation: ' for -eval, or
    '----- Epoch[E/N], ' after an epoch. local/master: (loss, acc)."""
    log.write(f"{prefix}Validation Loss: {local[0]:.4f}, Validation Acc@1: {local[1]:.4f}, time: {seconds:.2f}",
              f"{prefix}Validation Loss: {master[0]:.4f}, Validation Acc@1: {master[1]:.4f}, time: {seconds:.2f}")
