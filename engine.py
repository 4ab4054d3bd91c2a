"""Training and evaluation of the ABAW Swin models, shared by main_single_gpu.py and main_multi_gpu.py.

One code path serves one process and N processes (`paddle.distributed.launch`): data are split by
a seeded, epoch-indexed sampler (loader.py), gradients are averaged by `paddle.DataParallel`, and
evaluation results are gathered on every rank with the sampler's padding removed by sample index.
`run(config)` follows the release's steps: build the data, build the model, load or resume
weights, train epoch by epoch (validating and saving), or with -eval only evaluate. Checkpoints and
the output folder are handled by checkpoints.py, the data by datasets.py and loader.py, the
optimiser pieces by optim.py and mixup.py, processes and devices by distributed.py.
"""
import datetime
import json
import math
import os
import sys
import time

import cpu_env  # threading / MKL settings before paddle is imported; logged at run start
import numpy as np
import paddle
import paddle.nn.functional as F

import checkpoints
import config as config_module
import console
import datasets
import instruments
import labels as abaw_labels
import swin_transformer
from checkpoints import CheckpointError, unwrap
from distributed import (all_gather_array, all_reduce_mean, announce_end, join_group, rank0_file,
                         setup_device, world, writing)
from errors import TrainingError, UsageError
from fileio import atomic_open, atomic_path, check_writable_dir
from loader import build_loader, seed_epoch
from metrics import classification_scores
from mixup import Mixup
from optim import (ModelEma, WarmupCosine, build_grad_scaler, build_optimizer, label_smoothing,  # noqa: F401
                   scaled_learning_rates, smoothed_targets, soft_cross_entropy)
from predictor import ExportedModel
from train_log import RunLog, TrainProgress, ValidationProgress, batch_accuracy, validation_summary


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the message names the step."""


# ---------------------------------------------------------------------------------------------
# Train / evaluate

def _ok_rows(images, labels, ok, index, dataset):
    """Drop rows whose image was corrupt when DATA.SKIP_BAD_IMAGES, else stop naming the file.
    Returns (images, labels, n_bad)."""
    bad = int((ok == 0).sum())
    if bad == 0:
        return images, labels, 0
    if not dataset.skip_bad_images:
        raise dataset.bad_image_error(int(index.numpy()[(ok.numpy() == 0)][0]))
    keep = paddle.nonzero(ok != 0).flatten()
    return paddle.gather(images, keep), paddle.gather(labels, keep), bad


def train_one_epoch(model, loader, optimizer, lr_scheduler, config, epoch, logger, world_size=1,
                    scaler=None, ema=None, mixup=None):
    """One epoch, logged as the release did (train_log.TrainProgress); returns dict(train_loss,
    train_acc, lr, images, seconds, bad_images), loss and accuracy averaged over the processes."""
    model.train()
    accum = max(1, config.TRAIN.ACCUM_ITER)
    num_batches = len(loader)
    num_classes = config.MODEL.NUM_CLASSES
    smoothing = label_smoothing(config)
    progress = TrainProgress(logger, epoch, config.TRAIN.NUM_EPOCHS, num_batches, config.REPORT_FREQ, world_size)
    bad_images, seen = 0, 0
    start = time.time()
    optimizer.clear_grad()
    for batch_id, (images, labels, index, ok) in enumerate(loader):
        images, labels, bad = _ok_rows(images, labels, ok, index, loader.dataset)
        bad_images += bad
        if batch_id % accum == 0:
            # The release's per-iteration schedule: the learning rate at this fractional epoch.
            lr_scheduler.step(batch_id / num_batches + epoch - 1)  # the release's order of operations
        output = None
        with paddle.amp.auto_cast(enable=scaler is not None):
            if images.shape[0] == 0:
                # Every image of this batch was corrupt: a zero loss keeps the ranks' collectives in step.
                loss = model(paddle.zeros([1, 3, config.DATA.IMAGE_SIZE, config.DATA.IMAGE_SIZE])).sum() * 0
            elif mixup is not None:
                mixed, targets = mixup(images, labels)
                output = model(mixed)
                loss = soft_cross_entropy(output, targets)
            else:
                output = model(images)
                loss = soft_cross_entropy(output, smoothed_targets(labels, num_classes, smoothing))
        count = int(images.shape[0])
        # Accuracy against the batch's own labels, under mixup too (the release meant that; on its
        # Paddle the call it made for mixup raised a shape error, see docs/release.md).
        acc = batch_accuracy(output.numpy(), labels.numpy()) if output is not None else 0.0
        loss_value = progress.update(batch_id, float(loss), acc, count, optimizer.get_lr())
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(
                f"loss is {loss_value} at epoch {epoch} step {batch_id + 1}/{num_batches} "
                f"(global step {(epoch - 1) * num_batches + batch_id + 1}); training stopped")
        scaled = loss / accum
        if scaler is not None:
            scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if (batch_id + 1) % accum == 0 or batch_id + 1 == num_batches:
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.clear_grad()
            if ema is not None:
                ema.update(unwrap(model))
        seen += count
    seconds = time.time() - start
    progress.end(optimizer.get_lr(), seconds)
    return {'train_loss': progress.master_loss.avg, 'train_acc': progress.master_acc.avg,
            'lr': float(optimizer.get_lr()), 'images': seen * world_size, 'seconds': seconds,
            'bad_images': bad_images}


@paddle.no_grad()
def predict(model, loader, world_size=1, progress=None):
    """(indices, logits float32 [N,C], skipped) over the whole dataset, each sample exactly once.
    progress (train_log.ValidationProgress): told every batch, to log as the release did."""
    model.eval()
    all_index, all_logits, all_ok = [], [], []
    with paddle.no_grad():
        for batch_id, (images, labels, index, ok) in enumerate(loader):
            logits = np.asarray(model(images), dtype=np.float32)
            all_logits.append(logits)
            all_index.append(index.numpy())
            all_ok.append(ok.numpy())
            if progress is not None:
                # A corrupt image (DATA.SKIP_BAD_IMAGES) counts as unlabelled.
                progress.update(batch_id, logits, np.where(ok.numpy() != 0, labels.numpy().reshape(-1), -1))
    index = all_gather_array(np.concatenate(all_index).astype(np.int64), world_size)
    logits = all_gather_array(np.concatenate(all_logits), world_size)
    ok = all_gather_array(np.concatenate(all_ok).astype(np.int64), world_size)
    # The sampler padded with repeats; keep each sample's first occurrence, in dataset order.
    index, first = np.unique(index, return_index=True)
    logits, ok = logits[first], ok[first]
    skipped = int((ok == 0).sum())
    return index[ok == 1], logits[ok == 1], skipped


def score(logits, labels, class_names):
    """Loss/accuracy/F1 over the frames labelled in the model's classes (None when there are none)."""
    mask = labels >= 0
    if not mask.any():
        return None
    result = classification_scores(labels[mask], logits[mask].argmax(axis=1), list(class_names))
    result['loss'] = float(F.cross_entropy(paddle.to_tensor(logits[mask]),
                                           paddle.to_tensor(labels[mask].astype(np.int64))))
    return result


def evaluate(model, loader, dataset, class_names, world_size=1, progress=None):
    """Predict every sample once and score the labelled ones: {paths, logits, labels, skipped, scores}."""
    index, logits, skipped = predict(model, loader, world_size, progress)
    if skipped and not dataset.skip_bad_images:
        bad = sorted(set(range(len(dataset))) - set(index.tolist()))
        raise dataset.bad_image_error(bad[0])
    if len(index) != len(dataset) - skipped:
        raise TrainingError(f"evaluation covered {len(index)} of {len(dataset) - skipped} frames")
    labels = np.array([dataset.samples[i][1] for i in index], dtype=np.int64)
    paths = [dataset.samples[i][0] for i in index]
    return {'paths': paths, 'logits': logits, 'labels': labels, 'skipped': skipped,
            'scores': score(logits, labels, class_names)}


def write_predictions(output_dir, result, class_names, class_type):
    """Write predictions.npz (paths, logits, labels, class names and type), atomically."""
    with atomic_path(os.path.join(output_dir, 'predictions.npz')) as tmp:
        np.savez(tmp, paths=np.array(result['paths'], dtype=str),
                 logits=result['logits'].astype(np.float32), labels=result['labels'].astype(np.int64),
                 class_names=np.array(class_names, dtype=str), class_type=np.array(class_type))


def _f1_fields(scores, prefix='val_'):
    if scores is None:
        return {f'{prefix}loss': None, f'{prefix}acc': None, f'{prefix}macro_f1': None}
    return {f'{prefix}loss': scores['loss'], f'{prefix}acc': scores['accuracy'],
            f'{prefix}macro_f1': scores['macro_f1'], f'{prefix}per_class_f1': scores['per_class_f1'],
            f'{prefix}confusion': scores['confusion']}


# ---------------------------------------------------------------------------------------------
# The run

def resolve_output(config, output_given, mode=None):
    """The output folder: -output as given, else the release's SAVE/<mode>-<time>, mode train or
    eval (main_test_multi_gpu.py: test)."""
    if output_given:
        return config.SAVE
    mode = mode or ('eval' if config.EVAL else 'train')
    return os.path.join(config.SAVE, f"{mode}-{datetime.datetime.now().strftime('%Y%m%d-%H-%M')}")


def load_weights(model, path, logger, strict_head):
    """Pretrained/evaluated weights. strict_head: the classifier must match (evaluation)."""
    checkpoints.load_pretrained(unwrap(model), path, keep_head=strict_head)
    logger.info(f"----- Pretrained: Load model state from {path}")


class RunContext:
    """What every step of a run needs: config, class names, rank, world size, output folder, logger."""

    def __init__(self, config, output_dir, rank, world_size, logger, device):
        self.config, self.output_dir, self.logger = config, output_dir, logger
        self.rank, self.world_size, self.device = rank, world_size, device
        self.class_names = abaw_labels.CLASS_NAMES[config.DATA.CLASS_TYPE]

    def write_json(self, name, content):
        with atomic_open(os.path.join(self.output_dir, name), 'w', encoding='utf-8') as f:
            json.dump(content, f, indent=1)


def start_run(config, output_given, distributed, command=None, mode=None, overwrite=False):
    """STEP 0: check the config, join the process group, claim the output folder (refusing one that
    holds another run unless `overwrite`), open the log (the command line, then the release's
    config dump), set the device."""
    swin_transformer.check_shape_keys(config)
    wanted = abaw_labels.NUM_CLASSES[abaw_labels.check_class_type(config.DATA.CLASS_TYPE)]
    if config.MODEL.NUM_CLASSES != wanted:
        raise UsageError(f"MODEL.NUM_CLASSES {config.MODEL.NUM_CLASSES} does not match class_type "
                         f"'{config.DATA.CLASS_TYPE}' ({wanted} classes)")
    if distributed and paddle.distributed.get_world_size() > 1:
        join_group(config.PEER_TIMEOUT)
    rank, world_size = world()
    output_dir = resolve_output(config, output_given, mode)
    # Every rank checks, so all of them stop with the same exit code before anything is written.
    checkpoints.check_output_dir(output_dir, config.EVAL, config.MODEL.RESUME, overwrite)
    removed = []
    if rank == 0:
        check_writable_dir(output_dir)
        checkpoints.claim_output_dir(output_dir)
        removed = checkpoints.remove_previous_run(output_dir, config.EVAL) if overwrite else []
    if world_size > 1:
        paddle.distributed.barrier()  # rank 0 has checked and claimed the folder: every rank logs into it
        os.makedirs(output_dir, exist_ok=True)  # another node's disk
    logger = RunLog(output_dir, rank)
    if command is not None:
        logger.command(command)
    logger.write(f"----- world_size = {world_size}, local_rank = {rank} \n----- {config}")
    if removed:
        logger.info(f"-overwrite: removed the earlier run's {', '.join(removed)} from {output_dir}")
    logger.info(cpu_env.describe())
    device = setup_device(config, logger)
    ctx = RunContext(config, output_dir, rank, world_size, logger, device)
    if rank == 0:
        with atomic_open(os.path.join(output_dir, 'config.yaml'), 'w', encoding='utf-8') as f:
            f.write(config.dump())
    seed_epoch(config.SEED, 0, rank)
    return ctx


def evaluate_only(ctx, model, val_set, val_loader):
    """-eval: predictions for every face frame of the evaluated videos, and their scores."""
    config, logger = ctx.config, ctx.logger
    weights = config.MODEL.PRETRAINED or (config.MODEL.RESUME if config.MODEL.RESUME != 'auto' else None)
    if not weights:
        raise UsageError("-eval needs -pretrained CHECKPOINT.pdparams (the model to evaluate)")
    if weights.endswith('.pdparams'):
        load_weights(model, weights, logger, strict_head=True)
        if ctx.world_size > 1:
            model = paddle.DataParallel(model)
    else:
        model = ExportedModel(weights, config, ctx.device, logger)
    logger.info("----- Start Validation")
    result = validate(ctx, model, val_loader, val_set, "----- Validation: ")
    if ctx.rank == 0:
        write_predictions(ctx.output_dir, result, ctx.class_names, config.DATA.CLASS_TYPE)
        ctx.write_json('metrics.json', {
            'class_type': config.DATA.CLASS_TYPE, 'class_names': list(ctx.class_names),
            'checkpoint': weights, 'frames': len(result['paths']),
            'labelled_frames': int((result['labels'] >= 0).sum()),
            'skipped_bad_images': result['skipped'], 'scores': result['scores']})
        s = result['scores']
        logger.info(f"eval: {len(result['paths'])} frames -> {ctx.output_dir}/predictions.npz"
                    + (f"; loss {s['loss']:.4f} acc {s['accuracy']:.4f} macro F1 {s['macro_f1']:.4f}" if s else
                       "; no labelled frames, no scores"))
    return result


class Trainer:
    """The training objects (STEP 2-7): loader, schedule, optimizer, AMP scaler, EMA, mixup, and
    the state a resumed run continues from (last finished epoch, best macro F1)."""

    def __init__(self, ctx, model, output_given):
        config, logger = ctx.config, ctx.logger
        self.train_set = datasets.build_dataset(config, 'train', logger)
        logger.info(f"training frames: {len(self.train_set)}")
        self.loader, self.sampler = build_loader(self.train_set, config, True, ctx.rank, ctx.world_size, logger)
        logger.info(f"----- Total # of train batch (single gpu): {len(self.loader)}")
        base_lr, warmup_lr, end_lr = scaled_learning_rates(config, ctx.world_size)
        if config.TRAIN.LINEAR_SCALED_LR is not None:
            # The release's line (which printed the base rate three times); here each rate.
            logger.info(f"Base lr is scaled to: {base_lr}, warmup start lr is scaled to: {warmup_lr}, "
                        f"end lr is scaled to: {end_lr}")
        self.lr_scheduler = WarmupCosine(base_lr, warmup_lr, end_lr, config.TRAIN.WARMUP_EPOCHS,
                                         config.TRAIN.NUM_EPOCHS)
        self.lr_scheduler.step(int(config.TRAIN.LAST_EPOCH))
        if config.MODEL.PRETRAINED and not config.MODEL.RESUME:
            load_weights(model, config.MODEL.PRETRAINED, logger, strict_head=False)
        # Started after the pretrained weights load (the release started it from the random init).
        self.ema = (ModelEma(model, config.TRAIN.MODEL_EMA_DECAY, config.TRAIN.MODEL_EMA_FORCE_CPU)
                    if config.TRAIN.MODEL_EMA else None)
        self.optimizer = build_optimizer(config, model, self.lr_scheduler)
        use_amp = bool(config.AMP)
        if use_amp and ctx.device == 'cpu':
            logger.info("-amp: ignored on CPU (mixed precision needs a GPU); training in float32")
            use_amp = False
        self.scaler = build_grad_scaler(config) if use_amp else None
        self.mixup = Mixup(config, config.MODEL.NUM_CLASSES) if Mixup.enabled(config) else None
        self.last_epoch, self.best_f1 = config.TRAIN.LAST_EPOCH, None
        resume = config.MODEL.RESUME
        if resume == 'auto':
            if not output_given:
                raise UsageError("-resume auto needs -output DIR (the folder of the run to resume)")
            # Rank 0 chooses, so that every node resumes from the same epoch.
            resume = rank0_file(checkpoints.find_resume_checkpoint(ctx.output_dir, logger) if ctx.rank == 0
                                else None, ctx.world_size, '-resume auto')
            if resume is None:
                logger.info(f"resume auto: no checkpoint in {ctx.output_dir}; starting from scratch")
        if resume:
            if not os.path.isfile(resume):
                raise CheckpointError(f"-resume {resume}: checkpoint file does not exist")
            self.last_epoch, self.best_f1 = checkpoints.restore(
                resume, model, self.optimizer, self.lr_scheduler, self.scaler, self.ema, config, logger)
        self.last_good = resume
        self.model = paddle.DataParallel(model) if ctx.world_size > 1 else model
        self.eval_model = None

    def start_epoch(self, ctx, epoch):
        seed_epoch(ctx.config.SEED, epoch, ctx.rank)
        self.sampler.set_epoch(epoch)
        self.train_set.epoch = epoch
        if self.mixup is not None:
            self.mixup.set_epoch(ctx.config.SEED, epoch, ctx.rank)

    def validation_model(self, ctx):
        """The model to validate: the trained weights, as the release, or with TRAIN.VALIDATE_EMA
        (and TRAIN.MODEL_EMA) the EMA weights, which then also choose the best checkpoint."""
        if self.ema is None or not ctx.config.TRAIN.VALIDATE_EMA:
            return self.model
        self.eval_model = self.eval_model or swin_transformer.build_swin(ctx.config)
        self.eval_model.set_state_dict(self.ema.state_dict())
        return self.eval_model


def validate(ctx, model, val_loader, val_set, summary_prefix):
    """evaluate() with the release's progress lines (every REPORT_FREQ batches, with the time
    left) and its closing line: this process's loss and Acc@1 over its batches, and the exact
    scores (every frame once) as the values of all processes."""
    progress = ValidationProgress(ctx.logger, len(val_loader), ctx.config.REPORT_FREQ, ctx.world_size)
    result = evaluate(model, val_loader, val_set, ctx.class_names, ctx.world_size, progress)
    s = result['scores']
    exact = (s['loss'], s['accuracy']) if s else (progress.master_loss.avg, progress.master_acc.avg)
    validation_summary(ctx.logger, summary_prefix, (progress.loss.avg, progress.acc.avg), exact, progress.seconds())
    return result


def validate_epoch(ctx, trainer, epoch, val_set, val_loader, record):
    """Validate after `epoch`; updates `record` and the best macro F1. Returns (scores, improved)."""
    ctx.logger.info(f"----- Validation after Epoch: {epoch}")
    result = validate(ctx, trainer.validation_model(ctx), val_loader, val_set,
                      f"----- Epoch[{epoch:03d}/{ctx.config.TRAIN.NUM_EPOCHS:03d}], ")
    scores = result['scores']
    record.update(_f1_fields(scores))
    if scores is None:
        return None, False
    ctx.logger.info(f"----- Epoch[{epoch:03d}/{ctx.config.TRAIN.NUM_EPOCHS:03d}], Validation macro F1: "
                    f"{scores['macro_f1']:.4f}, per class: "
                    + ', '.join(f"{k} {v:.4f}" for k, v in scores['per_class_f1'].items()))
    improved = trainer.best_f1 is None or scores['macro_f1'] > trainer.best_f1
    if improved:
        trainer.best_f1 = scores['macro_f1']
    return scores, improved


def save_epoch(ctx, trainer, epoch, train_loss, record, improved):
    """Rank 0 writes the epoch's history record, best, periodic and last checkpoints, atomically."""
    config, logger, out = ctx.config, ctx.logger, ctx.output_dir
    state = checkpoints.checkpoint_state(trainer.model, trainer.optimizer, epoch, trainer.lr_scheduler,
                                         trainer.scaler, trainer.ema, trainer.best_f1)
    # Order matters for -resume auto: any checkpoint of epoch E marks E finished, so the epoch's
    # history record and best model are written before the first of them (a kill in between
    # redoes epoch E; the other way round would lose E's record and best model).
    checkpoints.append_history(out, record)
    instruments.epoch_finished(out, record, visualdl=config.VISUALDL)
    if improved:
        checkpoints.save_checkpoint(os.path.join(out, 'best.pdparams'), state)
        ctx.write_json('best.json', {'epoch': epoch, 'macro_f1': trainer.best_f1})
        logger.info(f"----- New best macro F1 {trainer.best_f1:.4f}: {out}/best.pdparams")
    if epoch % config.SAVE_FREQ == 0 or epoch == config.TRAIN.NUM_EPOCHS:
        path = checkpoints.save_checkpoint(os.path.join(out, f"Epoch-{epoch}-Loss-{train_loss:.4f}.pdparams"), state)
        logger.info(f"----- Save model: {path}")
        keep = int(config.TRAIN.KEEP_CHECKPOINTS or 0)
        if keep > 0:
            checkpoints.prune_periodic(out, keep)
    trainer.last_good = checkpoints.save_checkpoint(os.path.join(out, 'last.pdparams'), state)


def train(ctx, trainer, val_set, val_loader):
    """STEP 10: the epochs after the last finished one; returns the last validation scores."""
    config, logger = ctx.config, ctx.logger
    last_scores = None
    logger.info(f"----- Start training from epoch {trainer.last_epoch + 1}.")
    for epoch in range(trainer.last_epoch + 1, config.TRAIN.NUM_EPOCHS + 1):
        trainer.start_epoch(ctx, epoch)
        logger.info(f"Train epoch {epoch}. LR={trainer.optimizer.get_lr():.6e}")
        try:
            stats = train_one_epoch(trainer.model, trainer.loader, trainer.optimizer, trainer.lr_scheduler,
                                    config, epoch, logger, ctx.world_size, trainer.scaler, trainer.ema,
                                    trainer.mixup)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}; last good checkpoint: {trainer.last_good or 'none'}") from None
        bad = int(all_reduce_mean(stats['bad_images'], ctx.world_size) * ctx.world_size)
        rate = stats['images'] / max(stats['seconds'], 1e-9)
        if bad:
            logger.info(f"----- Epoch[{epoch:03d}/{config.TRAIN.NUM_EPOCHS:03d}], skipped {bad} corrupt images")
        record = {'epoch': epoch, 'train_loss': stats['train_loss'], 'train_acc': stats['train_acc'],
                  'lr': stats['lr'], 'train_images_per_s': rate}
        if bad:
            record['skipped_bad_images'] = bad
        improved = False
        if config.VALIDATE_FREQ and (epoch % config.VALIDATE_FREQ == 0 or epoch == config.TRAIN.NUM_EPOCHS):
            last_scores, improved = validate_epoch(ctx, trainer, epoch, val_set, val_loader, record)
        record['best_macro_f1'] = trainer.best_f1
        if ctx.rank == 0:
            with writing():
                save_epoch(ctx, trainer, epoch, stats['train_loss'], record, improved)
    return last_scores


def run(config, output_given=True, distributed=False, command=None, overwrite=False):
    """Train (or with config.EVAL, evaluate) as configured. Returns a result dict (rank-local).
    command: the command line, written at the top of the log; overwrite: start over in an output
    folder that holds an earlier run of the same kind."""
    ctx = start_run(config, output_given, distributed, command, overwrite=overwrite)
    with ctx.logger.recording_failure():
        return _run(ctx, output_given)


def _run(ctx, output_given):
    config = ctx.config
    # STEP 1: data to validate or evaluate on (-eval: every face frame; validation during
    # training, as the release: the frames in the model's classes), and the model
    val_set = datasets.build_dataset(config, 'eval' if config.EVAL else 'val', ctx.logger)
    ctx.logger.info(f"{'evaluation' if config.EVAL else 'validation'} frames: {len(val_set)} "
                    f"({config.DATA.CLASS_TYPE}, {int(sum(1 for _, l in val_set.samples if l >= 0))} "
                    f"labelled in its classes)")
    val_loader, _ = build_loader(val_set, config, False, ctx.rank, ctx.world_size, ctx.logger)
    ctx.logger.info(f"----- Total # of val batch (single gpu): {len(val_loader)}")
    model = swin_transformer.build_swin(config)
    if config.EVAL:
        return evaluate_only(ctx, model, val_set, val_loader)
    trainer = Trainer(ctx, model, output_given)
    last_scores = train(ctx, trainer, val_set, val_loader)
    digest = checkpoints.weights_digest(unwrap(trainer.model))
    # Every rank logs it: equal digests prove the processes ended with identical weights.
    ctx.logger.info(f"final weights sha256 {digest}")
    return {'output': ctx.output_dir, 'best_macro_f1': trainer.best_f1, 'last_scores': last_scores,
            'model': unwrap(trainer.model), 'weights_sha256': digest}


def build_parser(description):
    """The release's flags plus this project's (config.add_common_args)."""
    return config_module.add_common_args(console.ArgumentParser(description))


def main(argv=None, distributed=False, description='CFC-SP Swin training/evaluation', runner=None):
    """Command-line entry: every expected failure ends as one 'error: ...' line (naming the rank
    after the first) and its exit code: 2 for a bad flag or input, 1 for a failure while running.
    runner: what to run with the parsed config (default: run; main_test_multi_gpu.py passes its own)."""
    rank = paddle.distributed.get_rank()  # from the launcher's environment, before the group exists
    return console.run_command(_parse_and_run, argv, distributed, description, runner or run,
                               error_label=f"error (rank {rank})" if rank else 'error')


def _parse_and_run(argv, distributed, description, runner):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(description).parse_args(argv)
    config = config_module.update_config(config_module.get_config(), args)
    with announce_end():
        runner(config, output_given=bool(args.output), distributed=distributed, command=[sys.argv[0]] + argv,
               overwrite=args.overwrite)
