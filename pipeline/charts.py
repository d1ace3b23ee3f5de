"""Inline SVG charts for the run report: no script, no network, readable in any browser and in
an e-mail client. Each function returns one <svg> element as text; values may be None (drawn as
a gap)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#1f6feb", "#d4731b", "#2f9e44", "#9c36b5", "#c92a2a", "#5c7cfa")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _fmt(value: float) -> str:
    if abs(value) >= 1e9:
        return f"{value / 1e9:.1f}B"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.0f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _legend(names: Sequence[str], x: float, y: float) -> str:
    items = []
    for number, name in enumerate(names):
        left = x + number * 140
        items.append(
            f'<rect x="{left}" y="{y - 9}" width="10" height="10" '
            f'fill="{PALETTE[number % len(PALETTE)]}"/>'
            f'<text x="{left + 14}" y="{y}" {FONT}>{escape(name)}</text>'
        )
    return "".join(items)


def hbar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    formatter: Callable[[float], str] = _fmt,
    width: int = 560,
) -> str:
    """Horizontal bars, one per label (segment sizes, coverage)."""
    row, left, top = 20, 170, 24
    height = top + row * len(labels) + 10
    peak = max((v for v in values if v is not None), default=0) or 1
    span = width - left - 70
    parts = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>']
    for number, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + number * row
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" {FONT}>{escape(str(label))}'
            "</text>"
        )
        if value is not None:
            length = max(span * value / peak, 0)
            parts.append(
                f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" '
                f'fill="{PALETTE[0]}"><title>{escape(str(label))}: {formatter(value)}</title>'
                "</rect>"
                f'<text x="{left + length + 4:.1f}" y="{y + 13}" {FONT}>{formatter(value)}</text>'
            )
    return _svg(width, height, parts, title)


def grouped_bar_chart(
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str,
    reference: float | None = None,
    width: int = 560,
    height: int = 260,
) -> str:
    """Vertical bars per category, one colour per series (e.g. lift per decile, model vs
    baseline); `reference` draws a dashed horizontal line (e.g. lift 1 = random)."""
    left, right, top, bottom = 50, 10, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    peak = max([*values, reference or 0, 0]) * 1.1 or 1
    slot = plot_w / max(len(categories), 1)
    bar = slot * 0.8 / max(len(series), 1)
    parts = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>']
    parts += _y_axis(left, top, plot_w, plot_h, 0, peak, y_label)
    for number, category in enumerate(categories):
        x0 = left + number * slot + slot * 0.1
        for s, (name, vs) in enumerate(series.items()):
            value = vs[number]
            if value is None:
                continue
            h = plot_h * value / peak
            parts.append(
                f'<rect x="{x0 + s * bar:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                f"<title>{escape(name)} {escape(str(category))}: {value:.3g}</title></rect>"
            )
        parts.append(
            f'<text x="{left + (number + 0.5) * slot:.1f}" y="{top + plot_h + 14}" '
            f'text-anchor="middle" {FONT}>{escape(str(category))}</text>'
        )
    if reference is not None:
        y = top + plot_h - plot_h * reference / peak
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#555" '
            'stroke-dasharray="4 3"/>'
        )
    parts.append(_legend(list(series), left, height - 6))
    return _svg(width, height, parts, title)


def line_chart(
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    *,
    title: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    diagonal: bool = False,
    x_values: Sequence[float] | None = None,
    width: int = 560,
    height: int = 260,
) -> str:
    """Lines with markers. With x_values the x axis is numeric (e.g. predicted probability)
    and `diagonal` draws y = x (a perfectly calibrated model)."""
    left, right, top, bottom = 50, 10, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    low, high = y_range or (min(values, default=0), max(values, default=1))
    if high <= low:
        high = low + 1
    if x_values is None:
        xs = list(range(len(x_labels)))
        x_low, x_high = -0.5, max(len(x_labels) - 0.5, 0.5)
    else:
        xs = list(x_values)
        x_low, x_high = low, high

    def px(x: float) -> float:
        return left + plot_w * (x - x_low) / (x_high - x_low)

    def py(y: float) -> float:
        return top + plot_h - plot_h * (y - low) / (high - low)

    parts = [f'<text x="0" y="14" {FONT} font-weight="bold">{escape(title)}</text>']
    parts += _y_axis(left, top, plot_w, plot_h, low, high, y_label)
    if diagonal:
        parts.append(
            f'<line x1="{px(low):.1f}" y1="{py(low):.1f}" x2="{px(high):.1f}" '
            f'y2="{py(high):.1f}" stroke="#888" stroke-dasharray="4 3"/>'
        )
    last_label = float("-inf")
    for number, label in enumerate(x_labels):
        x = px(xs[number])
        if x - last_label >= 34:  # labels closer than that would overlap
            last_label = x
            parts.append(
                f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                f"{FONT}>{escape(str(label))}</text>"
            )
    for s, (name, vs) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        points = [(px(x), py(v)) for x, v in zip(xs, vs, strict=True) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y), v in zip(points, [v for v in vs if v is not None], strict=True):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)}: {v:.3g}</title></circle>"
            )
    parts.append(_legend(list(series), left, height - 6))
    return _svg(width, height, parts, title)


def _y_axis(left, top, plot_w, plot_h, low, high, label) -> list[str]:
    parts = [
        f'<text x="12" y="{top + plot_h / 2}" {FONT} transform="rotate(-90 12 '
        f'{top + plot_h / 2})" text-anchor="middle">{escape(label)}</text>'
    ]
    for tick in range(5):
        value = low + (high - low) * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{_fmt(value)}</text>'
        )
    return parts


def _svg(width: int, height: int, parts: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        + "".join(parts)
        + "</svg>"
    )
