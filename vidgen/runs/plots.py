"""Pictures people look at after a run: a loss curve and a contact sheet of generated clips (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def loss_curve_png(history: list[dict], path: str | Path, evals: list[dict] = ()) -> Path:
    """Training loss per step (raw and smoothed), with all-three prompt accuracy on a second axis if evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    loss = np.array([h["loss"] for h in history])
    window = max(1, len(loss) // 50)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, loss, alpha=0.25, color="tab:blue", label="loss")
    ax.plot(steps[window - 1:], smooth, color="tab:blue", label=f"loss (mean of {window})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    if evals:
        acc_ax = ax.twinx()
        eval_steps = [e["step"] for e in evals]
        acc_ax.plot(eval_steps, [e["seen"]["all_three"] for e in evals], "o-", color="tab:green", label="seen")
        acc_ax.plot(eval_steps, [e["heldout"]["all_three"] for e in evals], "s--", color="tab:orange",
                    label="held-out")
        acc_ax.set_ylim(0, 1)
        acc_ax.set_ylabel("prompt accuracy (all three)")
        acc_ax.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.set_title("vidgen training")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def contact_sheet_png(clips: np.ndarray, captions: list[str], path: str | Path, scale: int = 3) -> Path:
    """One row per clip (uint8 (B, T, H, W, 3)), its frames left to right, the caption above each row."""
    b, t, h, w, _ = clips.shape
    label_h, gap = 14, 2
    sheet = Image.new("RGB", (t * (w * scale + gap) + gap, b * (h * scale + label_h + gap) + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (clip, caption) in enumerate(zip(clips, captions, strict=True)):
        top = gap + row * (h * scale + label_h + gap)
        draw.text((gap, top), caption, fill="black")
        for col, frame in enumerate(clip):
            tile = Image.fromarray(frame).resize((w * scale, h * scale), Image.Resampling.NEAREST)
            sheet.paste(tile, (gap + col * (w * scale + gap), top + label_h))
    path = Path(path)
    sheet.save(path)
    return path
