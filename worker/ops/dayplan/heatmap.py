"""The day's plan as a heatmap (SVG) and as text (pure). One cell per minute, shaded by the
jobs running, framed red where two runs overlap; a grid of rectangles needs no plotting library.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from html import escape

from worker.ops.dayplan.jobs import WHERE, DayPlan, Overlap, minute_load

CELL = 15
GAP = 1
LEFT = 52
TOP = 78
#: Fill per number of jobs in a minute: none, 1, 2, 3, 4 or more (a sequential blue scale).
SHADES = ("#f2f2f2", "#c6dbef", "#6baed6", "#2171b5", "#08306b")
OVERLAP = "#d62728"
TREND_START = "#ff7f0e"


def clock(seconds: float) -> str:
    seconds = int(seconds) % 86_400
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def overlap_minutes(overlaps: tuple[Overlap, ...]) -> dict[int, list[Overlap]]:
    """Minute of the day -> the overlaps whose common time touches it."""
    found: dict[int, list[Overlap]] = defaultdict(list)
    for overlap in overlaps:
        start = max(overlap.first.start_s, overlap.second.start_s)
        end = min(overlap.first.end_s, overlap.second.end_s)
        for minute in range(int(start // 60), int((end - 1e-9) // 60) + 1):
            found[minute % 1440].append(overlap)
    return found


def render_svg(plan: DayPlan) -> str:
    load = minute_load(plan.runs)
    clashes = overlap_minutes(plan.overlaps)
    trend_starts = {int(r.start_s // 60) % 1440 for r in plan.runs if r.job.kind == "trend"}
    width = LEFT + 60 * CELL + 24
    height = TOP + 24 * CELL + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="15" font-weight="bold">Scheduled jobs on {plan.day.isoformat()} '
        "(UTC): minute of the hour × hour of the day</text>",
        f'<text x="{LEFT}" y="38">{len(plan.jobs)} jobs, {len(plan.runs)} runs; '
        f"{len(plan.overlaps)} overlapping pair(s) of runs in {len(clashes)} minute(s)</text>",
        f'<text x="{LEFT + 30 * CELL}" y="{TOP - 22}" text-anchor="middle">minute of the hour</text>',
    ]
    for minute in range(0, 60, 5):
        x = LEFT + minute * CELL + CELL / 2
        out.append(f'<text x="{x}" y="{TOP - 6}" text-anchor="middle">{minute}</text>')
    for hour in range(24):
        y = TOP + hour * CELL + CELL - 4
        out.append(f'<text x="{LEFT - 8}" y="{y}" text-anchor="end">{hour:02d}:00</text>')
        for minute in range(60):
            index = hour * 60 + minute
            runs = load.get(index, [])
            jobs = {r.job.name for r in runs}
            shade = SHADES[min(len(jobs), len(SHADES) - 1)]
            x, y0 = LEFT + minute * CELL, TOP + hour * CELL
            stroke = f' stroke="{OVERLAP}" stroke-width="2"' if index in clashes else ""
            tip = f"{hour:02d}:{minute:02d}: " + ("; ".join(
                f"{clock(r.start_s)} {r.job.name} ({r.length_s:.0f} s)" for r in runs) or "nothing runs")
            if index in clashes:
                tip += " | OVERLAP: " + "; ".join(
                    f"{o.first.job.name} × {o.second.job.name}" for o in clashes[index])
            out.append(f'<rect x="{x}" y="{y0}" width="{CELL - GAP}" height="{CELL - GAP}" fill="{shade}"{stroke}>'
                       f"<title>{escape(tip)}</title></rect>")
            if index in trend_starts:
                out.append(f'<circle cx="{x + (CELL - GAP) / 2}" cy="{y0 + (CELL - GAP) / 2}" r="2.5" '
                           f'fill="{TREND_START}"/>')
    y = TOP + 24 * CELL + 22  # the legend's row
    swatch = f'y="{y}" width="{CELL - GAP}" height="{CELL - GAP}"'
    out.append(f'<text x="{LEFT}" y="{y + 10}">jobs running in the minute:</text>')
    for count, shade in enumerate(SHADES):
        x = LEFT + 160 + 42 * count
        out += [f'<rect x="{x}" {swatch} fill="{shade}"/>',
                f'<text x="{x + CELL + 3}" y="{y + 11}">{count}{"+" * (count == len(SHADES) - 1)}</text>']
    x = LEFT + 170 + 42 * len(SHADES)
    out += [f'<rect x="{x}" {swatch} fill="{SHADES[1]}" stroke="{OVERLAP}" stroke-width="2"/>',
            f'<text x="{x + CELL + 4}" y="{y + 11}">two runs overlap</text>',
            f'<circle cx="{x + 137}" cy="{y + 7}" r="2.5" fill="{TREND_START}"/>',
            f'<text x="{x + 146}" y="{y + 11}">a trend run starts</text>',
            f'<text x="{LEFT}" y="{y + 34}" fill="#555">Each run lasts its measured 95th percentile (or an '
            "assumption; see the text summary). Hover a cell for its runs.</text>", "</svg>"]
    return "\n".join(out) + "\n"


def summary(plan: DayPlan, image: str | None = None) -> str:
    """What the heatmap shows, as text: the jobs, the busiest minutes, the overlaps."""
    per_job = Counter(r.job.name for r in plan.runs)
    lines = [f"Scheduled jobs on {plan.day.isoformat()} (UTC): {len(plan.jobs)} jobs, {len(plan.runs)} runs"]
    header = ("job", "runs on", "cron (UTC)", "offset", "runs/day", "length")
    table = [header] + [
        (job.name, WHERE[job.kind], job.cron, f"+{job.offset_s} s", str(per_job[job.name]),
         plan.lengths[job.name].describe())
        for job in plan.jobs
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
              for row in table]
    load = minute_load(plan.runs)
    busiest = sorted(load.items(), key=lambda item: (-len({r.job.name for r in item[1]}), item[0]))[:5]
    if busiest:
        lines.append("busiest minutes: " + ", ".join(
            f"{m // 60:02d}:{m % 60:02d} ({len({r.job.name for r in runs})} jobs)" for m, runs in busiest))
    if not plan.overlaps:
        lines.append("overlaps: none")
    else:
        pairs: dict[tuple[str, str], list[Overlap]] = defaultdict(list)
        for overlap in plan.overlaps:
            pairs[overlap.first.job.name, overlap.second.job.name].append(overlap)
        lines.append(f"overlaps: {len(plan.overlaps)} pair(s) of runs, {len(pairs)} pair(s) of jobs")
        for (first, second), found in sorted(pairs.items(), key=lambda item: -len(item[1])):
            times = ", ".join(clock(max(o.first.start_s, o.second.start_s)) for o in found[:3])
            more = f" and {len(found) - 3} more" if len(found) > 3 else ""
            lines.append(f"  {first} × {second}: {len(found)} time(s), at {times}{more}: {found[0].meaning}")
    if image:
        lines.append(f"heatmap: {image}")
    return "\n".join(lines) + "\n"
