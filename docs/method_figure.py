"""Draw docs/method.png, the CFC-SP pipeline as this repository runs it:
    .venv/bin/python docs/method_figure.py"""
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BOXES = {  # name: (x, y, width, height, text, colour)
    'video': (0.1, 2.2, 1.5, 1.1, 'video\nframes\n(FFmpeg)', '#e8e8e8'),
    'faces': (2.1, 2.2, 1.7, 1.1, 'MTCNN faces,\ntracked and\naligned, 224x224', '#e8e8e8'),
    'coarse': (4.4, 3.5, 1.8, 1.0, 'Coarse net\nSwin-S, 5 classes', '#cfe2f3'),
    'negative': (4.4, 1.0, 1.8, 1.0, 'Negative net\nSwin-S, 4 classes', '#f4cccc'),
    'sp_coarse': (6.8, 3.5, 1.7, 1.0, "Smooth Predicting\nf'ᵢ = fᵢ + mean(fᵢ₋₂..fᵢ₊₂)", '#fff2cc'),
    'sp_negative': (6.8, 1.0, 1.7, 1.0, "Smooth Predicting\nf'ᵢ = fᵢ + mean(fᵢ₋₂..fᵢ₊₂)", '#fff2cc'),
    'coarse_out': (9.1, 3.3, 2.3, 1.4, 'softmax:\nNeutral, Happiness,\nSurprise, Other,\nNegative', '#cfe2f3'),
    'negative_out': (9.1, 0.8, 2.3, 1.4, 'softmax:\nAnger, Disgust,\nFear, Sadness', '#f4cccc'),
    'fused': (12.0, 2.0, 2.0, 1.5, 'cascade:\nNegative refined\n-> 8 ABAW labels\nper frame', '#d9ead3'),
}
ARROWS = [('video', 'faces'), ('faces', 'coarse'), ('faces', 'negative'), ('coarse', 'sp_coarse'),
          ('negative', 'sp_negative'), ('sp_coarse', 'coarse_out'), ('sp_negative', 'negative_out'),
          ('coarse_out', 'fused'), ('negative_out', 'fused')]


def anchor(name, side):
    x, y, w, h = BOXES[name][:4]
    return (x + w, y + h / 2) if side == 'right' else (x, y + h / 2)


def main():
    fig, ax = plt.subplots(figsize=(14.5, 4.6))
    for x, y, w, h, text, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.05', fc=colour, ec='#555555'))
        ax.text(x + w / 2, y + h / 2, text, ha='center', va='center', fontsize=9)
    for start, end in ARROWS:
        ax.add_patch(FancyArrowPatch(anchor(start, 'right'), anchor(end, 'left'),
                                     arrowstyle='-|>', mutation_scale=14, color='#333333'))
    ax.text(7.65, 2.75, 'per model, per video, on the logits (K = 2)', ha='center', fontsize=8, style='italic')
    ax.set_xlim(0, 14.2)
    ax.set_ylim(0.5, 4.8)
    ax.axis('off')
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, 'method.png'), dpi=90)


if __name__ == '__main__':
    main()
