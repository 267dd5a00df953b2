"""The fine-tune tab's loss plot as inline SVG: numeric axes with round ticks, the raw losses as
faint points and a smoothed line over them.

Drawn here rather than with gr.LinePlot: that one needs a series per mark to show points and a
line together, and it typed the columns of the first (empty) frame as categories, which drew
every loss value as its own y label and sorted the curve by text.
"""

from __future__ import annotations

import html
import math

WIDTH, HEIGHT = 560, 240
LEFT, RIGHT, TOP, BOTTOM = 58, 14, 14, 38  # margins for the tick labels and axis titles
MAX_POINTS = 400  # raw points drawn; longer runs are thinned evenly (the smoothed line uses all)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About COUNT round values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not high > low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks, value = [], first
    while value < high + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def smoothed(values: list[float], weight: float) -> list[float]:
    """Exponential moving average, debiased like TensorBoard's so the start is not pulled to 0."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out


def smoothing_weight(count: int) -> float:
    """TensorBoard's default 0.6 for short runs, heavier for long ones (about a tenth of the run
    per time constant, at most 0.95)."""
    return min(0.95, max(0.6, 1 - 10 / max(count, 1)))


def loss_svg(steps: list[int], losses: list[float]) -> str:
    if not steps:
        return '<div class="loss-plot-empty">Loss: no steps yet</div>'
    x_ticks = nice_ticks(min(steps), max(steps))
    y_ticks = nice_ticks(min(losses), max(losses))
    x_low, x_high, y_low, y_high = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(step: float) -> float:
        return LEFT + (step - x_low) / ((x_high - x_low) or 1) * plot_w

    def py(loss: float) -> float:
        return TOP + (y_high - loss) / ((y_high - y_low) or 1) * plot_h

    parts = [f'<svg class="loss-plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
             f'aria-label="training loss by step" style="font: 11px sans-serif; max-width: {WIDTH}px">']
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1
    parts.append('<g class="x-axis">')
    for tick in x_ticks:
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#8884" />'
                     f'<text class="tick" x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" fill="currentColor">'
                     f"{tick_label(tick, x_step)}</text>")
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" text-anchor="middle" fill="currentColor">step</text></g>')
    parts.append('<g class="y-axis">')
    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#8884" />'
                     f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="currentColor">'
                     f"{tick_label(tick, y_step)}</text>")
    parts.append(f'<text x="12" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" fill="currentColor" '
                 f'transform="rotate(-90 12 {TOP + plot_h / 2:.1f})">loss</text></g>')
    stride = max(1, math.ceil(len(steps) / MAX_POINTS))
    parts.append('<g class="raw-loss" fill="#f97316" fill-opacity="0.45">')
    parts += [f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="2.5" />' for s, v in list(zip(steps, losses))[::stride]]
    parts.append("</g>")
    line = smoothed(losses, smoothing_weight(len(losses)))
    points = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in zip(steps, line))
    parts.append(f'<polyline class="smoothed-loss" points="{points}" fill="none" stroke="#ea580c" stroke-width="2" />')
    last = html.escape(f"step {steps[-1]}: loss {losses[-1]:.4g} (smoothed {line[-1]:.4g})")
    parts.append(f"<title>{last}</title></svg>")
    return "".join(parts)
