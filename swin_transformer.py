"""Swin Transformer in Paddle with the parameter names of the PaddleViT release.

The state dict matches the released ABAW3 Swin-S checkpoints key for key (`patch_embedding`,
`stages.N.blocks.M`, `stages.N.downsample` at the end of stages 0-2, `norm`, `fc`), so they load
unchanged; `tools/convert_torch_swin.py` maps timm / official PyTorch weights onto the same names.

Spatial sizes are fixed when the model is built (from DATA.IMAGE_SIZE), as in the release; that
lets every reshape use constants, which keeps the model exportable with `paddle.jit.save`.
"""
import inspect

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer


from errors import UsageError

def truncated_normal(std):
    """N(0, std) cut at +-2 std, as the release's TruncatedNormal(std=.02) was on Paddle 2.x.
    Paddle 3 added bounds a, b in absolute units with defaults -2, 2, which at std 0.02 cut
    nothing; passing them keeps both versions equal."""
    if 'a' in inspect.signature(nn.initializer.TruncatedNormal.__init__).parameters:
        return nn.initializer.TruncatedNormal(mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)
    return nn.initializer.TruncatedNormal(mean=0.0, std=std)


_trunc_normal = truncated_normal(0.02)
_zeros = nn.initializer.Constant(0.0)
_ones = nn.initializer.Constant(1.0)


class _AddmmWithGemmBiasGrad(PyLayer):
    """x @ w + b whose backward sums the bias gradient with a GEMM (ones @ grad).

    Paddle's addmm / linear backward reduces the bias gradient with a slow generic reduction on
    CPU; a [1, M] x [M, N] GEMM does it at BLAS speed (benchmarks/RESULTS.md).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return paddle.addmm(bias, x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        grad_x = paddle.matmul(grad, weight, transpose_y=True)
        grad_weight = paddle.matmul(x, grad, transpose_x=True)
        grad_bias = paddle.matmul(paddle.ones([1, grad.shape[0]], grad.dtype), grad).reshape([-1])
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """nn.Linear (same parameters) whose eager CPU forward adds the bias inside the GEMM.

    Paddle's linear runs the matmul and then a separate, single-threaded bias add over the whole
    output; addmm lets BLAS accumulate onto the bias (beta=1), which is faster on CPU. Static
    graphs (export) keep F.linear, which the inference passes fuse themselves.
    """

    def forward(self, x):
        if self.bias is None or not paddle.in_dynamic_mode() or not x.place.is_cpu_place():
            return F.linear(x, self.weight, self.bias)
        leading = list(x.shape[:-1])
        x = x.reshape([-1, x.shape[-1]])
        if paddle.is_grad_enabled() and not (x.stop_gradient and self.weight.stop_gradient
                                             and self.bias.stop_gradient):
            out = _AddmmWithGemmBiasGrad.apply(x, self.weight, self.bias)
        else:
            out = paddle.addmm(self.bias, x, self.weight)
        return out.reshape(leading + [self.weight.shape[1]])


def _linear(in_features, out_features, bias=True):
    return Linear(in_features, out_features,
                  weight_attr=paddle.ParamAttr(initializer=_trunc_normal),
                  bias_attr=paddle.ParamAttr(initializer=_zeros) if bias else False)


def _layer_norm(dim):
    return nn.LayerNorm(dim, weight_attr=paddle.ParamAttr(initializer=_ones),
                        bias_attr=paddle.ParamAttr(initializer=_zeros))


class DropPath(nn.Layer):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = [x.shape[0]] + [1] * (x.ndim - 1)
        # Scale the tiny per-sample mask, not x: one full-size multiply forward and backward.
        mask = paddle.floor(keep_prob + paddle.rand(shape, dtype=x.dtype)) / keep_prob
        return x * mask


class PatchEmbedding(nn.Layer):
    """Non-overlapping patch x patch convolution to embed_dim channels, then LayerNorm."""
    def __init__(self, patch_size, in_channels, embed_dim, patch_norm):
        super().__init__()
        self.patch_embed = nn.Conv2D(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = _layer_norm(embed_dim) if patch_norm else None

    def forward(self, x):
        x = self.patch_embed(x)  # [B, C, H/p, W/p]
        x = x.flatten(2).transpose([0, 2, 1])  # [B, L, C]
        if self.norm is not None:
            x = self.norm(x)
        return x


class Mlp(nn.Layer):
    """Linear, GELU, dropout, Linear, dropout."""
    def __init__(self, dim, hidden_dim, dropout):
        super().__init__()
        self.fc1 = _linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = _linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout(self.act(self.fc1(x)))
        return self.dropout(self.fc2(x))


def relative_position_index(window_size):
    """[N, N] index into the (2W-1)^2 bias table for every pair of positions in a window."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing='ij'))
    coords = coords.reshape(2, -1)
    relative = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return (relative[0] * (2 * window_size - 1) + relative[1]).astype('int64')


def shifted_window_mask(height, width, window_size, shift_size):
    """[nW, N, N] additive mask (0 or -100) that keeps attention inside each shifted region."""
    region = np.zeros((height, width), dtype='float32')
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[hs, ws] = label
            label += 1
    windows = region.reshape(height // window_size, window_size, width // window_size, window_size)
    windows = windows.transpose(0, 2, 1, 3).reshape(-1, window_size * window_size)
    mask = windows[:, None, :] - windows[:, :, None]
    return np.where(mask != 0, -100.0, 0.0).astype('float32')


class WindowAttention(nn.Layer):
    """Multi-head self-attention inside windows, with the relative position bias."""
    def __init__(self, dim, window_size, num_heads, qkv_bias, qk_scale, attention_dropout, dropout):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim ** -0.5
        # paddle.create_parameter, as the release: Paddle then generates the same parameter names
        # (create_parameter_N.w_0) in both programs, which the optimizer state is keyed by, so
        # the AdamW moments of these tables carry over between the release's runs and ours.
        self.relative_position_bias_table = paddle.create_parameter(
            shape=[(2 * window_size - 1) ** 2, num_heads], dtype='float32', default_initializer=_trunc_normal)
        self.register_buffer('relative_position_index',
                             paddle.to_tensor(relative_position_index(window_size).reshape([-1])),
                             persistable=False)
        self.qkv = _linear(dim, dim * 3, bias=qkv_bias)
        self.attn_dropout = nn.Dropout(attention_dropout)
        self.proj = _linear(dim, dim)
        self.proj_dropout = nn.Dropout(dropout)
        self.softmax = nn.Softmax(axis=-1)

    def relative_position_bias(self):
        """[heads, N, N] bias gathered from the table."""
        n = self.window_size * self.window_size
        bias = paddle.index_select(self.relative_position_bias_table, self.relative_position_index, axis=0)
        return bias.reshape([n, n, self.num_heads]).transpose([2, 0, 1])

    def attention_bias(self, mask=None):
        """[nW or 1, heads, N, N]: relative-position bias with the shift mask folded in.

        Adding the small combined tensor once costs one pass over the attention scores instead
        of two (bias, then mask), and the per-window broadcast is a plain leading-axis one.
        """
        bias = self.relative_position_bias().unsqueeze(0)
        return bias if mask is None else bias + mask.unsqueeze(1)

    def forward(self, x, mask=None):
        """x: [B*nW, N, C] windows; mask: [nW, N, N] or None."""
        n = self.window_size * self.window_size
        head_dim = self.dim // self.num_heads
        qkv = self.qkv(x).reshape([-1, n, 3, self.num_heads, head_dim]).transpose([2, 0, 3, 1, 4])
        # unbind's backward is one stack; indexing qkv[i] three times scatters three zero-filled copies.
        q, k, v = qkv.unbind(0)
        attn = paddle.matmul(q * self.scale, k, transpose_y=True)  # [B*nW, heads, N, N]
        bias = self.attention_bias(mask)
        attn = (attn.reshape([-1, bias.shape[0], self.num_heads, n, n]) + bias).reshape([-1, self.num_heads, n, n])
        attn = self.attn_dropout(self.softmax(attn))
        x = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([-1, n, self.dim])
        return self.proj_dropout(self.proj(x))


def window_order(height, width, window_size, shift_size):
    """Token indices that list a (cyclically shifted) [height, width] map window by window.

    Gathering tokens with this index does the roll and the window partition in one copy of
    contiguous channel rows; gathering with its inverse (argsort) undoes both.
    """
    rows = (np.arange(height) + shift_size) % height
    cols = (np.arange(width) + shift_size) % width
    grid = rows[:, None] * width + cols[None, :]
    grid = grid.reshape(height // window_size, window_size, width // window_size, window_size)
    return grid.transpose(0, 2, 1, 3).reshape(-1).astype('int64')


class SwinTransformerBlock(nn.Layer):
    """Pre-norm (shifted) window attention and MLP, each with a residual and DropPath."""
    def __init__(self, dim, input_resolution, num_heads, window_size, shift_size, mlp_ratio,
                 qkv_bias, qk_scale, dropout, attention_dropout, droppath):
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        if min(input_resolution) <= window_size:
            # The whole feature map fits in one window: nothing to shift.
            window_size, shift_size = min(input_resolution), 0
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = _layer_norm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale,
                                    attention_dropout, dropout)
        self.drop_path = DropPath(droppath) if droppath > 0 else None
        self.norm2 = _layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        if shift_size > 0:
            height, width = input_resolution
            self.register_buffer('attn_mask', paddle.to_tensor(
                shifted_window_mask(height, width, window_size, shift_size)), persistable=False)
        else:
            self.attn_mask = None
        height, width = input_resolution
        self.num_tokens = height * width
        order = window_order(height, width, window_size, shift_size)
        if (order == np.arange(order.size)).all():
            self.window_index = self.token_index = None  # one unshifted window: tokens already in order
        else:
            self.register_buffer('window_index', paddle.to_tensor(order), persistable=False)
            self.register_buffer('token_index', paddle.to_tensor(np.argsort(order)), persistable=False)

    def _residual(self, x, branch):
        return x + (self.drop_path(branch) if self.drop_path is not None else branch)

    def _windows(self, h):
        """[B, L, C] -> [B*nW, N, C], cyclically shifted first if this block shifts."""
        if not self.training:
            # Eval: one gather of contiguous channel rows does the roll and the partition.
            if self.window_index is not None:
                h = paddle.index_select(h, self.window_index, axis=1)
            return h.reshape([-1, self.window_size ** 2, self.dim])
        # Training: roll + transpose, whose backward is another roll + transpose; the gather's
        # backward (a scatter-add) measured much slower than this on CPU.
        height, width = self.input_resolution
        ws, shift = self.window_size, self.shift_size
        h = h.reshape([-1, height, width, self.dim])
        if shift > 0:
            h = paddle.roll(h, shifts=(-shift, -shift), axis=(1, 2))
        h = h.reshape([-1, height // ws, ws, width // ws, ws, self.dim])
        return h.transpose([0, 1, 3, 2, 4, 5]).reshape([-1, ws * ws, self.dim])

    def _tokens(self, windows):
        """Inverse of _windows: [B*nW, N, C] -> [B, L, C] in the original token order."""
        if not self.training:
            h = windows.reshape([-1, self.num_tokens, self.dim])
            return h if self.token_index is None else paddle.index_select(h, self.token_index, axis=1)
        height, width = self.input_resolution
        ws, shift = self.window_size, self.shift_size
        h = windows.reshape([-1, height // ws, width // ws, ws, ws, self.dim])
        h = h.transpose([0, 1, 3, 2, 4, 5]).reshape([-1, height, width, self.dim])
        if shift > 0:
            h = paddle.roll(h, shifts=(shift, shift), axis=(1, 2))
        return h.reshape([-1, self.num_tokens, self.dim])

    def forward(self, x):
        h = self._tokens(self.attn(self._windows(self.norm1(x)), self.attn_mask))
        x = self._residual(x, h)
        return self._residual(x, self.mlp(self.norm2(x)))


class PatchMerging(nn.Layer):
    """Halve the resolution: concatenate each 2x2 neighbourhood (C -> 4C), norm, project to 2C."""

    def __init__(self, input_resolution, dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.dim = dim
        self.reduction = _linear(4 * dim, 2 * dim, bias=False)
        self.norm = _layer_norm(4 * dim)
        height, width = input_resolution
        self.num_tokens = height * width
        grid = np.arange(height * width).reshape(height // 2, 2, width // 2, 2)
        order = grid.transpose(0, 2, 3, 1).reshape(-1).astype('int64')
        self.register_buffer('merge_index', paddle.to_tensor(order), persistable=False)

    def forward(self, x):
        if self.training:  # see SwinTransformerBlock._windows for why training avoids the gather
            height, width = self.input_resolution
            x = x.reshape([-1, height // 2, 2, width // 2, 2, self.dim]).transpose([0, 1, 3, 4, 2, 5])
        else:
            # One gather of channel rows lists each 2x2 neighbourhood's tokens consecutively.
            x = paddle.index_select(x, self.merge_index, axis=1)
        # Channel order (row 0 col 0, row 1 col 0, row 0 col 1, row 1 col 1), as in the release.
        return self.reduction(self.norm(x.reshape([-1, self.num_tokens // 4, 4 * self.dim])))


class SwinTransformerStage(nn.Layer):
    """`depth` blocks, alternately unshifted and shifted, then PatchMerging (not in the last stage)."""
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio, qkv_bias,
                 qk_scale, dropout, attention_dropout, droppath, downsample):
        super().__init__()
        self.blocks = nn.LayerList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size,
                                 0 if i % 2 == 0 else window_size // 2, mlp_ratio, qkv_bias,
                                 qk_scale, dropout, attention_dropout, droppath[i])
            for i in range(depth)])
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return x


class SwinTransformer(nn.Layer):
    """Swin Transformer classifier with the release's layer names; see build_swin."""
    def __init__(self, image_size=224, patch_size=4, in_channels=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4.0,
                 qkv_bias=True, qk_scale=None, dropout=0.0, attention_dropout=0.0, droppath=0.1,
                 ape=False, patch_norm=True, final_norm=False):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch size {patch_size}")
        self.num_classes = num_classes
        self.num_stages = len(depths)
        self.num_features = int(embed_dim * 2 ** (self.num_stages - 1))
        self.final_norm = final_norm
        self.patch_embedding = PatchEmbedding(patch_size, in_channels, embed_dim, patch_norm)
        resolution = image_size // patch_size
        self.ape = ape
        if ape:
            self.absolute_positional_embedding = self.create_parameter(
                shape=[1, resolution * resolution, embed_dim], default_initializer=_trunc_normal)
        self.position_dropout = nn.Dropout(dropout)
        rates = np.linspace(0, droppath, sum(depths)).tolist()
        stages = []
        for i, depth in enumerate(depths):
            size = resolution // 2 ** i
            needs_window_multiple = min(size, size) > window_size
            if needs_window_multiple and size % window_size:
                raise ValueError(f"stage {i} feature size {size} is not a multiple of window size {window_size}")
            stages.append(SwinTransformerStage(
                int(embed_dim * 2 ** i), (size, size), depth, num_heads[i], window_size, mlp_ratio,
                qkv_bias, qk_scale, dropout, attention_dropout,
                rates[sum(depths[:i]):sum(depths[:i + 1])], downsample=i < self.num_stages - 1))
        self.stages = nn.LayerList(stages)
        # Kept (and loaded) even when unused so released checkpoints round-trip key for key.
        self.norm = _layer_norm(self.num_features)
        self.fc = _linear(self.num_features, num_classes) if num_classes > 0 else None

    def forward_features(self, x):
        x = self.patch_embedding(x)
        if self.ape:
            x = x + self.absolute_positional_embedding
        x = self.position_dropout(x)
        for stage in self.stages:
            x = stage(x)
        if self.final_norm:
            x = self.norm(x)
        return x.mean(axis=1)

    def forward(self, x):
        x = self.forward_features(x)
        return self.fc(x) if self.fc is not None else x


def check_shape_keys(config):
    """Stop with the keys at fault when the image cannot be cut into patches and merged stage by
    stage (e.g. config.py's release defaults, PATCH_SIZE 16, used without the Swin YAML's 4)."""
    m, size = config.MODEL, config.DATA.IMAGE_SIZE
    fix = "pass -cfg configs/swin_small_patch4_window7_224.yaml (the release's Swin-S) or a config built on it"
    if m.PATCH_SIZE < 1 or size % m.PATCH_SIZE:
        raise UsageError(f"DATA.IMAGE_SIZE {size} is not a multiple of MODEL.PATCH_SIZE {m.PATCH_SIZE}: {fix}")
    sides = [size // m.PATCH_SIZE]
    for _ in range(len(m.STAGE_DEPTHS) - 1):
        if sides[-1] % 2:
            chain = ' -> '.join(map(str, sides)) + f" -> {sides[-1] / 2:g}"
            raise UsageError(
                f"DATA.IMAGE_SIZE {size} / MODEL.PATCH_SIZE {m.PATCH_SIZE} gives {sides[0]}x{sides[0]} "
                f"patches, which the {len(m.STAGE_DEPTHS) - 1} patch mergings of MODEL.STAGE_DEPTHS "
                f"cannot halve ({chain}); {fix}")
        sides.append(sides[-1] // 2)


def build_swin(config):
    """The Swin model that `config` (see config.py) describes."""
    check_shape_keys(config)
    m = config.MODEL
    return SwinTransformer(
        image_size=config.DATA.IMAGE_SIZE, patch_size=m.PATCH_SIZE,
        in_channels=config.DATA.IMAGE_CHANNELS, num_classes=m.NUM_CLASSES, embed_dim=m.EMBED_DIM,
        depths=list(m.STAGE_DEPTHS), num_heads=list(m.NUM_HEADS), window_size=m.WINDOW_SIZE,
        mlp_ratio=m.MLP_RATIO, qkv_bias=m.QKV_BIAS, qk_scale=m.QK_SCALE, dropout=m.DROPOUT,
        attention_dropout=m.ATTENTION_DROPOUT, droppath=m.DROPPATH, ape=m.APE,
        patch_norm=m.PATCH_NORM, final_norm=m.FINAL_NORM)


def count_parameters(model):
    """Number of scalar parameters."""
    return sum(int(np.prod(p.shape)) for p in model.parameters())
