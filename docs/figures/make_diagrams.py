"""Draw the data-path diagram of torchrl_amago: docs/figures/data_path.png (boxes and arrows, matplotlib only).

    python docs/figures/make_diagrams.py            # writes docs/figures/data_path.png
    python docs/figures/make_diagrams.py --out DIR  # writes DIR/data_path.png

Every box names the package's real classes and functions; tests/test_figures.py checks that they exist, that the
script runs, and that the committed PNG has the size the script makes (pixel-identical under the matplotlib version
recorded in the PNG's "Software" field).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = Path(__file__).resolve().parent
WIDTH_IN, HEIGHT_IN, DPI = 12.0, 6.0, 100  # 1200 x 600 px: readable at README width (~880 px)

ACT, LEARN, SHARED = "#dbeafe", "#fde68a", "#dcfce7"  # acting path, learning path, modules shared by both
EDGE, TEXT = "#1f2937", "#111827"

# Public names drawn in the boxes (tests/test_figures.py imports each one from its subpackage).
NAMES = {
    "torchrl_amago.envs": ["make_amago_env", "MetaTrial", "PrevActionReward", "EpisodeTime", "EpsilonGreedy", "TMaze"],
    "torchrl_amago.modules": ["AMAGOPolicy", "MLPTimestepEncoder", "TransformerTrajEncoder", "ActorHead",
                              "DiscreteCritic", "PopArt", "TrajectoryEncoder"],
    "torchrl_amago.data": ["make_sequence_replay"],
    "torchrl_amago.objectives": ["AMAGOLoss", "AMAGOSoftUpdate"],
    "torchrl_amago.trainers": ["AMAGOTrainer"],
    "torchrl.collectors": ["Collector"],
}


def box(ax, x, y, w, h, title, lines, color):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.012", fc=color,
                                ec=EDGE, lw=1.2))
    ax.text(x + w / 2, y + h - 0.022, title, ha="center", va="top", fontsize=11.5, fontweight="bold", color=TEXT)
    ax.text(x + w / 2, y + h - 0.068, "\n".join(lines), ha="center", va="top", fontsize=9.5, color=TEXT,
            family="DejaVu Sans", linespacing=1.35)


def arrow(ax, start, end, label=None, style="-|>", ls="-", rad=0.0, label_xy=None, color=EDGE):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=16, lw=1.5, ls=ls, color=color,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=2, shrinkB=2))
    if label:
        lx, ly = label_xy or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.02)
        ax.text(lx, ly, label, ha="center", va="bottom", fontsize=9, color=color, style="italic")


def draw() -> plt.Figure:
    fig = plt.figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.text(0.5, 0.985, "torchrl_amago: where the data goes", ha="center", va="top", fontsize=14, fontweight="bold")

    # ---- acting path (top row) -------------------------------------------------------------------------------
    ax.text(0.012, 0.895, "ACTING", fontsize=10, fontweight="bold", color="#1d4ed8", rotation=0)
    top = 0.60, 0.27  # y, height
    box(ax, 0.012, top[0], 0.175, top[1], "environment",
        ["any TorchRL EnvBase", "(batched builtin: TMaze, ...;", "or a gym / suite adapter)", "N envs step together"],
        ACT)
    box(ax, 0.225, top[0], 0.235, top[1], "TorchRL transforms",
        ["make_amago_env(env, ...)", "MetaTrial: k episodes = 1 trial", "InitTracker → is_init",
         "PrevActionReward → prev_action,", "   prev_reward;  EpisodeTime → time_idx"], ACT)
    box(ax, 0.50, top[0], 0.19, top[1], "Collector",
        ["torchrl.collectors", "frames_per_batch steps", "of N envs → [N·t]", "TensorDict with \"next\""], ACT)
    box(ax, 0.73, top[0], 0.258, top[1], "AMAGOPolicy",
        ["one step per env: timestep enc.", "→ trajectory enc. in step mode", "(per-env KV cache, cleared where",
         "is_init) → ActorHead (γ = 0.999)", "+ EpsilonGreedy exploration"], ACT)
    arrow(ax, (0.187, 0.735), (0.225, 0.735))
    arrow(ax, (0.46, 0.735), (0.50, 0.735))
    arrow(ax, (0.69, 0.78), (0.73, 0.78), "obs", label_xy=(0.71, 0.795))
    arrow(ax, (0.73, 0.68), (0.69, 0.68), "action", label_xy=(0.71, 0.695))
    arrow(ax, (0.595, 0.87), (0.10, 0.87), "actions step the envs", rad=0.12, label_xy=(0.35, 0.905))

    # ---- learning path (bottom row) --------------------------------------------------------------------------
    ax.text(0.012, 0.445, "LEARNING", fontsize=10, fontweight="bold", color="#b45309")
    low = 0.06, 0.37  # y, height
    box(ax, 0.012, low[0], 0.21, low[1], "replay windows",
        ["make_sequence_replay(...)", "whole trials on disk", "(LazyMemmapStorage)", "sample → [B, T] windows",
         "of one trial each,", "+ \"mask\" (False on padding)", "+ their \"next\" view:", "T + 1 observations"], LEARN)
    box(ax, 0.26, low[0], 0.25, low[1], "shared sequence model",
        ["MLPTimestepEncoder", "(a timestep encoder)", "obs + prev_action + prev_reward", "→ tstep_emb [B, T+1, d]",
         "", "TransformerTrajEncoder", "(a TrajectoryEncoder)", "ONE causal pass over T+1 steps",
         "→ state_emb [B, T+1, d]"], SHARED)
    box(ax, 0.55, low[0], 0.215, low[1], "heads",
        ["ActorHead: one policy per γ", "(7 discounts: 0.1 ... 0.999)", "", "DiscreteCritic: C critics × 7 γ",
         "Q(s, a) and V(s) = Σπ·Q", "", "PopArt: per-γ value scale", "(target copies of the heads)"], LEARN)
    box(ax, 0.80, low[0], 0.188, low[1], "AMAGOLoss",
        ["critic: TD(γ) targets,", "REDQ min of 2 of C", "", "actor: DPG on the critics", "+ filtered BC",
         "(imitate a where A > 0)", "", "→ backward, AdamW", "AMAGOSoftUpdate (targets)"], LEARN)
    arrow(ax, (0.222, 0.245), (0.26, 0.245))
    arrow(ax, (0.51, 0.245), (0.55, 0.245))
    arrow(ax, (0.765, 0.245), (0.80, 0.245))
    # collector batches into the replay
    arrow(ax, (0.56, 0.60), (0.15, 0.43), "extend(batch): trial ids keep trials whole", rad=-0.06,
          label_xy=(0.40, 0.525))
    # the same modules act: the policy holds the very encoders and actor the loss trains
    arrow(ax, (0.70, 0.43), (0.80, 0.60), "", ls="--", style="-|>", color="#15803d")
    ax.text(0.77, 0.505, "the policy holds the same\nencoders + ActorHead", ha="left", va="center", fontsize=9,
            style="italic", color="#15803d")
    ax.text(0.5, 0.012, "AMAGOTrainer wires these pieces: collect → extend replay → K updates → evaluate → "
            "checkpoint", ha="center", va="bottom", fontsize=9.5, color="#374151")
    return fig


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: docs/figures)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "data_path.png"
    fig = draw()
    # no date in the file: the same matplotlib writes the same PNG
    fig.savefig(path, dpi=DPI, metadata={"Software": f"matplotlib {matplotlib.__version__}"})
    plt.close(fig)
    print(path)
    return path


if __name__ == "__main__":
    main()
