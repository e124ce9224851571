"""What a run prints: the per-round line with its ETA, the closing line, durations (CLI, ``flwr run``, sweeps)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from perfedavg.federation.divergence import collapse_note

#: A run shows its ETA in the round line once that much time remains (short runs stay uncluttered).
ETA_FROM_S = 60.0


def eta_seconds(round_times: Sequence[float], server_round: int, total: int) -> float | None:
    """The remaining time of a run from the rounds this process ran (``round_times``, first to last): their mean
    without the first (which pays start-up, e.g. Ray actors importing torch) times the rounds left; ``None`` until
    two rounds have run or when under :data:`ETA_FROM_S`."""
    if len(round_times) < 2 or server_round >= total:
        return None
    eta = sum(round_times[1:]) / (len(round_times) - 1) * (total - server_round)
    return eta if eta >= ETA_FROM_S else None


def format_duration(seconds: float) -> str:
    """``45s``, ``23m``, ``1h05m`` (progress lines: the round's ETA, the sweep's)."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(round(seconds / 60))
    return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def progress_line(server_round: int, total: int, m: Mapping[str, float], eta_s: float | None = None) -> str:
    """One console line per round: training loss, evaluation (global → personalized), clients, time, and the ETA of
    the run when given (:func:`eta_seconds`)."""
    parts = [f"round {server_round:>{len(str(total))}}/{total}", f"train/loss {m['train/loss']:.4f}"]
    if "eval/global_acc" in m:
        parts.append(f"acc global {m['eval/global_acc']:.3f} → personalized {m['eval/personalized_acc']:.3f}")
    elif "eval/global_loss" in m:
        parts.append(f"loss global {m['eval/global_loss']:.4f} → personalized {m['eval/personalized_loss']:.4f}")
    failed = int(m.get("clients/failed", 0))
    parts.append(f"{int(m['clients/trained'])} clients" + (f" ({failed} failed)" if failed else ""))
    parts.append(f"{m['time/round_s']:.2f} s")
    if eta_s is not None:
        parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)


def done_line(summary: Mapping[str, Any]) -> str:
    """The closing console line of a run: wall time and the final metrics, 4 decimals (CLI and ``flwr run`` alike),
    and where the training loss collapsed on the way (:mod:`perfedavg.federation.divergence`), that it did."""
    shown = ", ".join(f"{k} {v:.4f}" for k, v in summary["final"].items())
    return f"done in {summary['wall_s']:.1f} s: {shown}" + collapse_note(summary.get("rounds") or [])
