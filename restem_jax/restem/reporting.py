"""What a run leaves behind for people: summary.json, TensorBoard events, a plot, a table."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # Headless: TPU VMs and CI have no display.
import matplotlib.pyplot as plt  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402

from restem_jax.checkpoint_io import files  # noqa: E402


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
  """Flattens {"pass@k": {"4": x}} into {"pass@4": x}, keeping plain numbers."""
  out = {}
  for key, value in metrics.items():
    if isinstance(value, dict):
      prefix = key.split("@")[0]
      out.update({f"{prefix}@{k}": float(v) for k, v in value.items()})
    elif isinstance(value, (int, float)) and key != "iteration":
      out[key] = float(value)
  return out


def write_tensorboard(logdir: str, iteration: int, metrics: dict[str, Any]) -> None:
  with SummaryWriter(logdir) as writer:
    for tag, value in scalars(metrics).items():
      writer.add_scalar(tag, value, iteration)


def write_summary(path: str, iterations: Sequence[dict[str, Any]], best_iteration: int,
                  extra: dict[str, Any]) -> dict[str, Any]:
  summary = {"iterations": list(iterations), "best_iteration": best_iteration, **extra}
  files.write_json(path, summary)
  return summary


def plot_pass_at_1(path: str, iterations: Sequence[dict[str, Any]],
                   control: float | None = None) -> None:
  xs = [m["iteration"] for m in iterations]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(xs, [100 * m["test_pass@1"] for m in iterations], "o-", label="test pass@1 (greedy)")
  ax.plot(xs, [100 * m["train_solve_rate"] for m in iterations], "s--",
          label="train solve rate (E-step T)")
  if control is not None:
    ax.axhline(100 * control, color="gray", ls=":", label="SFT control, test pass@1")
  ax.set_xlabel("ReST^EM iteration (0 = base)")
  ax.set_ylabel("%")
  ax.set_xticks(xs)
  ax.legend(loc="best", fontsize=8)
  ax.grid(alpha=0.3)
  save_figure(fig, path)


def save_figure(fig: plt.Figure, path: str) -> None:
  """Writes `fig` as a PNG through `files` (so gs:// works) and frees it."""
  if fig.get_layout_engine() is None:  # A figure made with its own layout keeps it.
    fig.tight_layout()
  with files.open_for_writing(path) as f:
    fig.savefig(f, dpi=120, format="png")
  plt.close(fig)


def table(iterations: Sequence[dict[str, Any]], control: float | None = None) -> str:
  """Per-iteration table as printed at the end of a run."""
  ks = sorted(iterations[0]["pass@k"], key=int) if iterations else []
  header = ["iter", "test pass@1", "val reward", "train solve", "kept"] + [f"pass@{k}" for k in ks]
  rows = [header]
  for m in iterations:
    rows.append([str(m["iteration"]), f"{100 * m['test_pass@1']:.1f}", f"{100 * m['val_reward']:.1f}",
                 f"{100 * m['train_solve_rate']:.1f}", str(m.get("num_kept", "-"))]
                + [f"{100 * m['pass@k'][k]:.1f}" for k in ks])
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
  if control is not None:
    lines.append(f"SFT control (same extra steps on labelled data): test pass@1 {100 * control:.1f}")
  return "\n".join(lines)
