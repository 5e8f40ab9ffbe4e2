"""Charts as inline SVG drawn on the server: no JavaScript, and nothing fetched from the internet.

Every function takes plain numbers and text that is already translated, and returns one
``<svg class="chart">`` element as a string in which all text is escaped; the caller marks
it safe. Each shape that stands for a number carries it in ``data-value`` (intervals also
``data-lower`` and ``data-upper``), so what was drawn can be read back by a test or a
screen reader. Numbers become floats here only to place pixels; labels are formatted by
the caller from the exact values.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from html import escape

Number = int | float | Decimal

WIDTH = 560
ROW = 26
LEGEND_ROW = 16
FONT = "system-ui,-apple-system,'Noto Sans CJK SC','WenQuanYi Micro Hei',sans-serif"
COLORS = {
    "bar": "#417690",
    "positive": "#2f855a",
    "negative": "#c53030",
    "treated": "#2b6cb0",
    "holdout": "#718096",
    "cap": "#c05621",
    "grid": "#e2e8f0",
    "axis": "#4a5568",
    "text": "#1a202c",
}
# Arms after the first treated one take these, in order.
SERIES_COLORS = ["#2b6cb0", "#805ad5", "#d69e2e", "#319795", "#d53f8c"]
# A step curve of thousands of users is thinned to this many steps; at 560 pixels more cannot be seen.
MAX_POINTS = 400


@dataclass(frozen=True)
class Bar:
    label: str
    value: Number
    display: str


@dataclass(frozen=True)
class Interval:
    label: str
    estimate: Number
    lower: Number
    upper: Number
    display: str


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[Number, Number]]
    color: str = COLORS["treated"]
    dashed: bool = False


def _num(value: float) -> str:
    """Return a coordinate with two decimals at most, enough for a pixel."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _text(
    x: float,
    y: float,
    content: str,
    *,
    anchor: str = "start",
    size: int = 12,
    color: str = COLORS["text"],
    weight: str = "normal",
    css_class: str = "",
) -> str:
    attribute = f' class="{escape(css_class)}"' if css_class else ""
    return (
        f'<text{attribute} x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}" fill="{color}" '
        f'font-weight="{weight}">{escape(content)}</text>'
    )


def _text_width(content: str, size: int = 12) -> float:
    """Estimate a text's width in pixels: CJK characters are about square, others a little over half as wide."""
    return sum(size if ord(char) >= 0x2E80 else size * 0.6 for char in content)


def _short(label: str, width: float, size: int = 12) -> str:
    """Cut a label to fit a width in pixels, marking the cut with an ellipsis."""
    if _text_width(label, size) <= width:
        return label
    while label and _text_width(label + "…", size) > width:
        label = label[:-1]
    return label + "…"


NOTE_LINE = 16


def _pieces(word: str, width: float, size: int) -> list[str]:
    """Split a word too long for a line (Chinese text has no spaces to break at) into pieces that fit."""
    pieces, piece = [], ""
    for char in word:
        if piece and _text_width(piece + char, size) > width:
            pieces.append(piece)
            piece = ""
        piece += char
    return [*pieces, piece] if piece else pieces


def _wrap(content: str, width: float, size: int = 11) -> list[str]:
    """Break a text into lines that fit a width in pixels, at spaces, or anywhere in a word longer than a line."""
    lines: list[str] = []
    line = ""
    for word in (piece for token in content.split() for piece in _pieces(token, width, size)):
        candidate = f"{line} {word}" if line else word
        if line and _text_width(candidate, size) > width:
            lines.append(line)
            candidate = word
        line = candidate
    if line:
        lines.append(line)
    return [_short(item, width, size) for item in lines]


def _note_lines(notes: Sequence[str], width: int) -> list[str]:
    """Return the notes under a chart wrapped to its width; each note begins a new line."""
    return [line for note in notes for line in _wrap(note, width - 16)]


def _draw_notes(lines: Sequence[str], top: float) -> list[str]:
    return [
        _text(8, top + index * NOTE_LINE, line, size=11, color=COLORS["axis"], css_class="note")
        for index, line in enumerate(lines)
    ]


def _open(kind: str, title: str, width: int, height: float) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{kind}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {_num(height)}" width="{width}" font-family="{FONT}" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        _text(0, 16, title, size=14, weight="600"),
    ]


def _empty(kind: str, title: str, message: str, width: int) -> str:
    parts = _open(kind, title, width, 70)
    parts.append(_text(width / 2, 48, message, anchor="middle", color=COLORS["axis"]))
    return "".join(parts) + "</svg>"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return about ``count`` round tick values (1, 2 or 5 times a power of ten) covering low..high."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    # The round step nearest the raw one, so a range gets about as many ticks as asked for.
    step = next(m for limit, m in ((1.5, 1), (3, 2), (7, 5), (math.inf, 10)) if raw / magnitude < limit) * magnitude
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _tick_label(value: float, percent: bool = False) -> str:
    if percent:
        return f"{value * 100:.0f}%" if abs(value) >= 0.01 or value == 0 else f"{value * 100:.1f}%"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def bar_chart(
    *,
    title: str,
    bars: Sequence[Bar],
    empty: str,
    width: int = WIDTH,
    signed: bool = False,
    notes: Sequence[str] = (),
) -> str:
    """Draw horizontal bars, one row each; with ``signed`` negative values go left of a zero line in another colour.

    ``notes`` are printed under the bars: what they count, and what they cannot.
    """
    if not bars:
        return _empty("bar", title, empty, width)
    note_lines = _note_lines(notes, width)
    label_width, top = 150, 30
    value_width = max(70, 12 + max(_text_width(bar.display) for bar in bars))
    bars_height = top + ROW * len(bars) + 10
    height = bars_height + (NOTE_LINE * len(note_lines) + 6 if note_lines else 0)
    values = [float(bar.value) for bar in bars]
    low = min(0.0, *values) if signed else 0.0
    high = max(0.0, *values)
    span = (high - low) or 1.0
    plot_left, plot_width = label_width, width - label_width - value_width
    zero = plot_left + (0 - low) / span * plot_width
    parts = _open("bar", title, width, height)
    for index, (bar, value) in enumerate(zip(bars, values, strict=True)):
        y = top + index * ROW
        start, end = sorted((zero, zero + value / span * plot_width))
        color = COLORS["negative"] if value < 0 else (COLORS["positive"] if signed else COLORS["bar"])
        parts.append(_text(label_width - 8, y + 16, _short(bar.label, label_width - 12), anchor="end"))
        parts.append(
            f'<rect class="bar" x="{_num(start)}" y="{_num(y + 4)}" width="{_num(max(end - start, 1))}" '
            f'height="{ROW - 8}" fill="{color}" data-value="{escape(str(bar.value))}">'
            f"<title>{escape(bar.label)}: {escape(bar.display)}</title></rect>"
        )
        parts.append(_text(plot_left + plot_width + 6, y + 16, bar.display))
    parts.append(
        f'<line x1="{_num(zero)}" x2="{_num(zero)}" y1="{top}" y2="{_num(bars_height - 10)}" '
        f'stroke="{COLORS["axis"]}"/>'
    )
    return "".join(parts + _draw_notes(note_lines, bars_height + 8)) + "</svg>"


def interval_chart(
    *,
    title: str,
    intervals: Sequence[Interval],
    axis_label: str,
    empty: str,
    width: int = WIDTH,
    percent: bool = True,
    notes: Sequence[str] = (),
) -> str:
    """Draw each estimate as a point with a whisker from lower to upper bound, against a zero line.

    ``notes`` are printed under the chart (or, with no intervals, instead of it): estimates that
    could not be drawn and why.
    """
    note_lines = _note_lines(notes, width)
    if not intervals:
        if not note_lines:
            return _empty("interval", title, empty, width)
        parts = _open("interval", title, width, 40 + NOTE_LINE * len(note_lines))
        return "".join(parts + _draw_notes(note_lines, 44)) + "</svg>"
    label_width, top = 150, 30
    value_width = max(80, 14 + max(_text_width(item.display, 11) for item in intervals))
    plot_height = top + ROW * len(intervals) + 40
    height = plot_height + (NOTE_LINE * len(note_lines) + 8 if note_lines else 0)
    bounds = [float(value) for item in intervals for value in (item.lower, item.upper, item.estimate)]
    ticks = nice_ticks(min(0.0, *bounds), max(0.0, *bounds), 4)
    low, high = ticks[0], ticks[-1]
    plot_left, plot_width = label_width, width - label_width - value_width

    def x_of(value: float) -> float:
        return plot_left + (value - low) / (high - low) * plot_width

    parts = _open("interval", title, width, height)
    axis_y = top + ROW * len(intervals) + 4
    for tick in ticks:
        parts.append(
            f'<line x1="{_num(x_of(tick))}" x2="{_num(x_of(tick))}" y1="{top}" y2="{axis_y}" '
            f'stroke="{COLORS["grid"]}"/>'
        )
        parts.append(
            _text(x_of(tick), axis_y + 14, _tick_label(tick, percent), anchor="middle", size=10, color=COLORS["axis"])
        )
    parts.append(
        f'<line x1="{_num(x_of(0))}" x2="{_num(x_of(0))}" y1="{top}" y2="{axis_y}" stroke="{COLORS["axis"]}" '
        'stroke-dasharray="3 3"/>'
    )
    stroke = f'stroke="{COLORS["treated"]}" stroke-width="2"'
    for index, item in enumerate(intervals):
        y = top + index * ROW + ROW / 2
        lower, upper, estimate = x_of(float(item.lower)), x_of(float(item.upper)), x_of(float(item.estimate))
        parts.append(_text(label_width - 8, y + 4, _short(item.label, label_width - 12), anchor="end"))
        parts.append(
            f'<g class="interval" data-value="{escape(str(item.estimate))}" data-lower="{escape(str(item.lower))}" '
            f'data-upper="{escape(str(item.upper))}"><title>{escape(item.label)}: {escape(item.display)}</title>'
            f'<line x1="{_num(lower)}" x2="{_num(upper)}" y1="{_num(y)}" y2="{_num(y)}" {stroke}/>'
            f'<line x1="{_num(lower)}" x2="{_num(lower)}" y1="{_num(y - 6)}" y2="{_num(y + 6)}" {stroke}/>'
            f'<line x1="{_num(upper)}" x2="{_num(upper)}" y1="{_num(y - 6)}" y2="{_num(y + 6)}" {stroke}/>'
            f'<circle cx="{_num(estimate)}" cy="{_num(y)}" r="4.5" fill="{COLORS["treated"]}"/></g>'
        )
        parts.append(_text(plot_left + plot_width + 8, y + 4, item.display, size=11))
    parts.append(
        _text(plot_left + plot_width / 2, plot_height - 4, axis_label, anchor="middle", size=11, color=COLORS["axis"])
    )
    parts.extend(_draw_notes(note_lines, plot_height + 14))
    return "".join(parts) + "</svg>"


def _thin(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Keep at most ``limit`` points, evenly spread, always the first and the last."""
    if len(points) <= limit:
        return list(points)
    step = (len(points) - 1) / (limit - 1)
    return [points[round(index * step)] for index in range(limit)]


def _plot_area(width: int, height: float, legend_rows: int = 1) -> tuple[float, float, float, float]:
    """Return left, top, plot width and plot height of a chart with axes and a legend of that many rows above."""
    left, top, right, bottom = 56, 60 + LEGEND_ROW * (legend_rows - 1), 16, 36
    return left, top, width - left - right, height - top - bottom


def _legend(series: Sequence[Series], width: int, extra: Sequence[tuple[str, str, bool]] = ()) -> tuple[list[str], int]:
    """Draw every series' key above the plot, in as many rows as they need; return the parts and the rows.

    No key is left out: a chart of four learners' Qini curves and their random lines needs two rows at
    the dashboard's width, and a reader must be able to tell every line.
    """
    items = [(item.label, item.color, item.dashed) for item in series] + list(extra)
    parts, x, row = [], 0.0, 0
    for label, color, dashed in items:
        shown = _short(label, width - 40.0, 11)
        span = 40 + _text_width(shown, 11)
        if x and x + span > width:
            row, x = row + 1, 0.0
        y = 32 + LEGEND_ROW * row
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        parts.append(
            f'<line class="key" x1="{_num(x)}" x2="{_num(x + 18)}" y1="{y}" y2="{y}" stroke="{color}" '
            f'stroke-width="2.5"{dash}/>'
        )
        parts.append(_text(x + 22, y + 4, shown, size=11))
        x += span
    return parts, row + 1


def _axes(
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
    width: int,
    height: float,
    legend_rows: int = 1,
) -> list[str]:
    left, top, plot_width, plot_height = _plot_area(width, height, legend_rows)
    parts = []
    for y, label in y_ticks:
        parts.append(
            f'<line x1="{left}" x2="{_num(left + plot_width)}" y1="{_num(y)}" y2="{_num(y)}" '
            f'stroke="{COLORS["grid"]}"/>'
        )
        parts.append(_text(left - 6, y + 4, label, anchor="end", size=10, color=COLORS["axis"]))
    for x, label in x_ticks:
        parts.append(_text(x, top + plot_height + 14, label, anchor="middle", size=10, color=COLORS["axis"]))
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{_num(top + plot_height)}" stroke="{COLORS["axis"]}"/>')
    parts.append(
        f'<line x1="{left}" x2="{_num(left + plot_width)}" y1="{_num(top + plot_height)}" '
        f'y2="{_num(top + plot_height)}" stroke="{COLORS["axis"]}"/>'
    )
    parts.append(_text(left + plot_width / 2, height - 4, x_label, anchor="middle", size=11, color=COLORS["axis"]))
    parts.append(_text(4, top - 8, y_label, size=10, color=COLORS["axis"]))
    return parts


def step_chart(
    *,
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    empty: str,
    width: int = WIDTH,
    height: int = 280,
) -> str:
    """Draw right-continuous step curves (Kaplan-Meier survival) on a 0-100% scale, one per series."""
    drawn = [item for item in series if item.points]
    if not drawn:
        return _empty("step", title, empty, width)
    legend, rows = _legend(drawn, width)
    chart_height = height + LEGEND_ROW * (rows - 1)
    left, top, plot_width, plot_height = _plot_area(width, chart_height, rows)
    x_max = max(float(x) for item in drawn for x, _ in item.points) or 1.0
    x_ticks = nice_ticks(0.0, x_max, 5)

    def x_of(value: float) -> float:
        return left + value / x_ticks[-1] * plot_width

    def y_of(value: float) -> float:
        return top + (1 - value) * plot_height

    parts = _open("step", title, width, chart_height)
    parts += legend
    parts += _axes(
        [(x_of(tick), _tick_label(tick)) for tick in x_ticks],
        [(y_of(tick), _tick_label(tick, percent=True)) for tick in (0, 0.25, 0.5, 0.75, 1.0)],
        x_label,
        y_label,
        width,
        chart_height,
        rows,
    )
    for item in drawn:
        points = _thin([(float(x), float(y)) for x, y in item.points])
        path = [f"M{_num(x_of(points[0][0]))},{_num(y_of(points[0][1]))}"]
        for x, y in points[1:]:
            path.append(f"H{_num(x_of(x))}V{_num(y_of(y))}")
        dash = ' stroke-dasharray="6 4"' if item.dashed else ""
        final = points[-1][1]
        parts.append(
            f'<path class="curve" d="{"".join(path)}" fill="none" stroke="{item.color}" stroke-width="2"{dash} '
            f'data-value="{final:.4f}" data-points="{len(item.points)}"><title>{escape(item.label)}</title></path>'
        )
    return "".join(parts) + "</svg>"


def line_chart(
    *,
    title: str,
    series: Sequence[Series],
    x_ticks: Sequence[tuple[Number, str]],
    y_label: str,
    empty: str,
    cap: Number | None = None,
    cap_label: str = "",
    width: int = WIDTH,
    height: int = 260,
) -> str:
    """Draw lines through points (x as e.g. days since a start) and, if given, a horizontal cap line."""
    drawn = [item for item in series if item.points]
    if not drawn:
        return _empty("line", title, empty, width)
    extra = [(cap_label, COLORS["cap"], True)] if cap is not None else []
    legend, rows = _legend(drawn, width, extra)
    chart_height = height + LEGEND_ROW * (rows - 1)
    left, top, plot_width, plot_height = _plot_area(width, chart_height, rows)
    xs = [float(x) for item in drawn for x, _ in item.points] + [float(x) for x, _ in x_ticks]
    x_low, x_high = min(xs), max(xs)
    x_span = (x_high - x_low) or 1.0
    y_values = [float(y) for item in drawn for _, y in item.points] + ([float(cap)] if cap is not None else [])
    # From zero, or from below it when a line dips negative (a Qini curve can).
    y_low = min(0.0, min(y_values))
    y_ticks = nice_ticks(y_low, max(y_values) or (1.0 if y_low == 0 else 0.0), 4)

    def x_of(value: float) -> float:
        return left + (value - x_low) / x_span * plot_width

    def y_of(value: float) -> float:
        return top + (1 - (value - y_ticks[0]) / ((y_ticks[-1] - y_ticks[0]) or 1.0)) * plot_height

    parts = _open("line", title, width, chart_height)
    parts += legend
    parts += _axes(
        [(x_of(float(x)), label) for x, label in x_ticks],
        [(y_of(tick), _tick_label(tick)) for tick in y_ticks],
        "",
        y_label,
        width,
        chart_height,
        rows,
    )
    if cap is not None:
        parts.append(
            f'<line class="cap" x1="{left}" x2="{_num(left + plot_width)}" y1="{_num(y_of(float(cap)))}" '
            f'y2="{_num(y_of(float(cap)))}" stroke="{COLORS["cap"]}" stroke-width="2" stroke-dasharray="5 3" '
            f'data-value="{escape(str(cap))}"><title>{escape(cap_label)}</title></line>'
        )
    for item in drawn:
        points = _thin([(float(x), float(y)) for x, y in item.points])
        coordinates = " ".join(f"{_num(x_of(x))},{_num(y_of(y))}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if item.dashed else ""
        parts.append(
            f'<polyline class="series" points="{coordinates}" fill="none" stroke="{item.color}" stroke-width="2"{dash} '
            f'data-value="{escape(str(item.points[-1][1]))}"><title>{escape(item.label)}</title></polyline>'
        )
        x, y = points[-1]
        parts.append(f'<circle cx="{_num(x_of(x))}" cy="{_num(y_of(y))}" r="3" fill="{item.color}"/>')
    return "".join(parts) + "</svg>"
