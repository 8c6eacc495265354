"""Report files: CSV, XLSX (openpyxl) and PDF (matplotlib, Chinese title and labels).

Every file carries the same **attestation** (report id, generation time, the signed audit-log
checkpoint current when it was generated, and the SHA-256 of the source rows it was computed from):
in the PDF footer of every page, in the XLSX summary sheet and in the CSV header lines.  The file's own
SHA-256 cannot be inside it: it is recorded in the audit log (``report.export``).

Durations are seconds (3 decimals).  Every rate (online rate, availability, threshold) is a
**percentage**, its column or line marked ``(%)``: in the CSV a plain number of percent (``99.52``, ``100``;
at most 4 decimals, the precision of the former 6-decimal ratio), not ``99.52%`` — a bare number is read
as a number by spreadsheet programs in every locale that uses a decimal point, and by ``float()``,
``pandas`` and auditors' scripts alike, while a ``%`` suffix is read as text by most tools outside Excel.
In the XLSX a rate is a numeric cell holding the ratio with a percent number format (``0.00%``): Excel
shows 99.52 % and computes with the true value.  Times are shown in the report's display time zone.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gbcore.sheets import xlsx_text

from .service import ChannelFigures, PeriodResult, fmt_duration

__all__ = ["CHANNEL_COLUMNS", "RATE_COLUMNS", "TITLE", "Rate", "percent_text", "Attestation", "render", "write_csv", "write_pdf", "write_xlsx"]

TITLE = "视频监控点位在线率报表"
TITLE_EN = "Online-rate report of camera points"
KIND_NAMES = {"day": "日报 / daily", "week": "周报 / weekly", "month": "月报 / monthly", "year": "年报 / yearly",
              "custom": "自定义 / custom"}

#: (key, header) of the channel table, in CSV and XLSX order
CHANNEL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("device_id", "设备编码 / device id"),
    ("channel_id", "通道编码 / channel id"),
    ("name", "名称 / name"),
    ("org_node_id", "组织 / org node"),
    ("online_s", "在线时长(秒) / online s"),
    ("offline_s", "离线时长(秒) / offline s"),
    ("unknown_s", "未知时长(秒) / unknown s"),
    ("absent_s", "不存在时长(秒) / absent s"),
    ("outages", "离线次数 / outages"),
    ("longest_outage_s", "最长离线(秒) / longest outage s"),
    ("availability", "在线率(%) / availability (%)"),
)

#: keys of CHANNEL_COLUMNS holding a rate (percent in the CSV, a percent-formatted ratio in the XLSX)
RATE_COLUMNS = frozenset({"availability"})
XLSX_PERCENT_FORMAT = "0.00%"


@dataclass(frozen=True)
class Rate:
    """A rate (a ratio in [0, 1]) in a report: written as a percentage."""

    ratio: float


def percent_text(ratio: float | None) -> str:
    """A ratio as a plain number of percent for a CSV: 1.0 -> ``"100"``, 0.99524 -> ``"99.524"``, None -> ``""``
    (at most 4 decimals, trailing zeros dropped)."""
    if ratio is None:
        return ""
    text = f"{ratio * 100:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True)
class Attestation:
    report_id: str
    generated_at: datetime
    source_sha256: str
    checkpoint_origin: str | None = None
    checkpoint_size: int | None = None
    checkpoint_root: str | None = None  # base64, as in the C2SP checkpoint

    def lines(self) -> list[str]:
        if self.checkpoint_size is None:
            cp = "审计检查点 / audit checkpoint: 无 / none"
        else:
            cp = (f"审计检查点 / audit checkpoint: {self.checkpoint_origin} "
                  f"tree_size={self.checkpoint_size} root={self.checkpoint_root}")
        return [
            f"报表编号 / report id: {self.report_id}  生成时间 / generated: "
            f"{self.generated_at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
            cp,
            f"源数据摘要 / source SHA-256: {self.source_sha256}",
        ]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.2f}%"


def _local(ts: float | datetime, tz: ZoneInfo) -> str:
    dt = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _rate(ratio: float | None) -> Rate | None:
    return None if ratio is None else Rate(float(ratio))


def summary_pairs(res: PeriodResult) -> list[tuple[str, Any]]:
    """(label, value) pairs of the scope's figures, values as plain numbers/strings, rates as :class:`Rate`
    (None when there is none)."""
    tz = ZoneInfo(res.timezone)
    return [
        ("报表类型 / kind", KIND_NAMES.get(res.kind, res.kind)),
        ("统计周期 / period", res.label),
        ("开始 / start", _local(res.start, tz)),
        ("结束 / end", _local(res.end, tz)),
        ("统计截至 / computed up to", _local(res.covered_end, tz)),
        ("时区 / time zone", res.timezone),
        ("范围 / scope", res.scope.get("label", "")),
        ("点位数 / channels", len(res.channels)),
        ("计算规则 / rule", res.rule),
        ("在线率(%) / online rate (%)", _rate(res.rate)),
        ("时间加权在线率(%) / time-weighted rate (%)", _rate(res.time_weighted_rate)),
        ("通道平均在线率(%) / mean channel availability (%)", _rate(res.mean_availability)),
        (f"抽样在线率(%)(每 {res.sample_minutes} 分钟) / sampled rate (%) (every {res.sample_minutes} min)",
         _rate(res.sampled_rate)),
        ("考核值(%) / threshold (%)", _rate(res.threshold)),
        ("是否达标 / meets threshold", "否 / NO" if res.breach else ("是 / yes" if res.rate is not None else "—")),
        ("在线总时长(秒) / online s", round(res.online_s, 3)),
        ("离线总时长(秒) / offline s", round(res.offline_s, 3)),
        ("未知总时长(秒) / unknown s", round(res.unknown_s, 3)),
        ("平台停机时长(秒) / platform down s", round(res.platform_down_s, 3)),
        ("时钟回拨校正次数 / clamped transitions", res.clamped),
        ("源数据行数 / source rows", res.source_rows),
    ]


def _row(f: ChannelFigures) -> list[Any]:
    return [f.device_id, f.channel_id, f.name or "", f.org_node_id if f.org_node_id is not None else "",
            round(f.online_s, 3), round(f.offline_s, 3), round(f.unknown_s, 3), round(f.absent_s, 3), f.outages,
            round(f.longest_outage_s, 3), _rate(f.availability)]


def csv_value(value: Any) -> Any:
    """A cell of the CSV: a rate as a plain number of percent, None as empty."""
    from gbcore.sheets import csv_text

    if isinstance(value, Rate):
        return percent_text(value.ratio)
    return "" if value is None else csv_text(value)  # a channel named "=..." by its device stays text


# ---------------------------------------------------------------------------------------------- CSV
def write_csv(res: PeriodResult, att: Attestation, out: io.TextIOBase | Any) -> None:
    """Lines starting with ``#`` carry the title, summary and attestation; then the channel table."""
    out.write(f"# {TITLE} / {TITLE_EN}\n")
    w = csv.writer(out, lineterminator="\n")
    for k, v in summary_pairs(res):
        out.write(f"# {k}: {csv_value(v)}\n")
    for line in att.lines():
        out.write(f"# {line}\n")
    w.writerow([h for _, h in CHANNEL_COLUMNS])
    for f in res.channels:
        w.writerow([csv_value(v) for v in _row(f)])


# ---------------------------------------------------------------------------------------------- XLSX
# Control characters a worksheet cannot hold (openpyxl refuses the whole file): names come from devices and
# people, so they are replaced, not trusted (gbcore.sheets.xlsx_text).


def xlsx_row(values: list[Any], ws: Any = None) -> list[Any]:
    """``values`` with every text cell safe for a worksheet (each control character becomes U+FFFD); a
    :class:`Rate` becomes a numeric cell of the ratio with a percent format (needs ``ws``, the write-only
    sheet), None an empty cell."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, Rate):
            from openpyxl.cell import WriteOnlyCell

            cell = WriteOnlyCell(ws, value=v.ratio)
            cell.number_format = XLSX_PERCENT_FORMAT
            out.append(cell)
        elif isinstance(v, str):
            text = xlsx_text(v)
            if text.startswith("="):  # openpyxl would store it as a formula: a text cell instead
                from openpyxl.cell import WriteOnlyCell

                cell = WriteOnlyCell(ws, value=text)
                cell.data_type = "s"
                out.append(cell)
            else:
                out.append(text)
        else:
            out.append(v)
    return out


def write_xlsx(res: PeriodResult, att: Attestation, path: Path) -> None:
    from openpyxl import Workbook

    tz = ZoneInfo(res.timezone)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("汇总 Summary")
    ws.append([f"{TITLE} / {TITLE_EN}"])
    for k, v in summary_pairs(res):
        ws.append(xlsx_row([k, v], ws))
    ws.append([])
    for line in att.lines():
        ws.append([line])

    ws = wb.create_sheet("点位 Channels")
    ws.append([h for _, h in CHANNEL_COLUMNS])
    for f in res.channels:
        ws.append(xlsx_row(_row(f), ws))

    ws = wb.create_sheet("离线记录 Outages")
    ws.append(["设备编码 / device id", "通道编码 / channel id", "开始 / start", "结束 / end", "时长(秒) / seconds"])
    for f in res.channels:
        for a, b in f.outage_list or ():
            ws.append([f.device_id, f.channel_id, _local(a, tz), _local(b, tz), round(b - a, 3)])

    ws = wb.create_sheet("平台停机 Platform down")
    ws.append(["开始 / start", "结束 / end", "时长(秒) / seconds"])
    for a, b in res.platform_down:
        ws.append([_local(a, tz), _local(b, tz), round(b - a, 3)])
    wb.save(path)


# ---------------------------------------------------------------------------------------------- PDF
_font_ready: str | None = None


def _setup_font() -> str:
    global _font_ready
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager

    from watermark.font import find_cjk_font

    if _font_ready is None:
        path = find_cjk_font()
        font_manager.fontManager.addfont(path)
        _font_ready = font_manager.FontProperties(fname=path).get_name()
    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType: the text stays searchable (pdftotext)
    matplotlib.rcParams["font.family"] = [_font_ready, "DejaVu Sans"]
    matplotlib.rcParams["axes.unicode_minus"] = False
    return _font_ready


A4 = (8.27, 11.69)
ROWS_PER_PAGE = 50


def _footer(fig: Any, att: Attestation, page: int) -> None:
    lines = att.lines()
    for i, line in enumerate(lines):
        fig.text(0.05, 0.035 - i * 0.011, line, fontsize=6)
    fig.text(0.95, 0.045, f"第 {page} 页 / page {page}", fontsize=7, ha="right")


def write_pdf(res: PeriodResult, att: Attestation, path: Path, *, worst: int = 10) -> None:
    _setup_font()
    import matplotlib.dates as mdates
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    tz = ZoneInfo(res.timezone)
    page = 0
    with PdfPages(path, metadata={"Title": f"{TITLE} {res.label}", "Creator": "gbops"}) as pdf:
        # page 1: title, summary, rate chart
        page += 1
        fig = plt.figure(figsize=A4)
        fig.text(0.5, 0.955, TITLE, ha="center", fontsize=20)
        fig.text(0.5, 0.93, f"{TITLE_EN} — {KIND_NAMES.get(res.kind, res.kind)} {res.label}", ha="center",
                 fontsize=10)
        y = 0.895
        for k, v in summary_pairs(res):
            if isinstance(v, Rate):
                v = _pct(v.ratio)
            elif v is None:
                v = "—"
            color = "red" if k.startswith("是否达标") and res.breach else "black"
            fig.text(0.08, y, k, fontsize=8.5)
            fig.text(0.55, y, str(v), fontsize=8.5, color=color)
            y -= 0.0175
        ax = fig.add_axes((0.1, 0.1, 0.85, 0.40))
        times = [datetime.fromtimestamp(t, UTC).astimezone(tz) for t in res.series_times]
        rates = [float("nan") if r is None else r * 100 for r in res.series_rates]
        if times:
            ax.plot(times, rates, color="#1f77b4", linewidth=1.2, label="在线率 / online rate")
        ax.axhline(res.threshold * 100, color="red", linestyle="--", linewidth=1,
                   label=f"考核值 / threshold {res.threshold * 100:.0f}%")
        for a, b in res.platform_down:
            ax.axvspan(datetime.fromtimestamp(a, UTC).astimezone(tz), datetime.fromtimestamp(b, UTC).astimezone(tz),
                       color="#bbbbbb", alpha=0.5, linewidth=0)
        ax.set_ylim(0, 102)
        ax.set_ylabel("在线率 % / online rate %")
        ax.set_title("在线率随时间变化（灰色：平台停机，未知） / rate over the period (grey: platform down)",
                     fontsize=9)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))
        ax.tick_params(axis="x", labelsize=7, rotation=30)
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(alpha=0.3)
        _footer(fig, att, page)
        pdf.savefig(fig)
        plt.close(fig)

        # page 2: outage timeline of the worst channels
        page += 1
        fig = plt.figure(figsize=A4)
        fig.text(0.5, 0.955, "离线最多的点位 / channels with the most offline time", ha="center", fontsize=13)
        chosen = res.worst[:worst]
        ax = fig.add_axes((0.30, 0.12, 0.65, 0.78))
        s0 = res.start.timestamp()
        colors = {"online": "#2ca02c", "offline": "#d62728", "unknown": "#bbbbbb"}
        for i, (_f, segs) in enumerate(chosen):
            for state, color in colors.items():
                bars = [((a - s0) / 3600.0, (b - a) / 3600.0) for a, b, st in segs if st == state]
                if bars:
                    ax.broken_barh(bars, (i - 0.4, 0.8), facecolors=color)
        ax.set_yticks(range(len(chosen)))
        ax.set_yticklabels([f"{f.channel_id}\n{(f.name or '')[:16]} {_pct(f.availability)}" for f, _ in chosen],
                           fontsize=6.5)
        ax.invert_yaxis()
        ax.set_xlim(0, (res.end.timestamp() - s0) / 3600.0)
        ax.set_xlabel(f"自 {_local(res.start, tz)} 起的小时数 / hours since the period start")
        ax.set_title("绿：在线 红：离线 灰：未知 / green online, red offline, grey unknown", fontsize=8)
        if not chosen:
            ax.text(0.5, 0.5, "本周期无离线 / no outage in the period", ha="center", transform=ax.transAxes)
        _footer(fig, att, page)
        pdf.savefig(fig)
        plt.close(fig)

        # channel table, every channel (worst availability first)
        ordered = sorted(res.channels, key=lambda f: (f.availability if f.availability is not None else 2.0,
                                                       f.device_id, f.channel_id))
        heads = ["通道编码 / channel", "名称 / name", "在线 / online", "离线 / offline", "未知 / unknown",
                 "次数 / n", "最长 / longest", "在线率 / rate"]
        xs = [0.05, 0.24, 0.40, 0.51, 0.62, 0.73, 0.78, 0.89]
        for first in range(0, max(len(ordered), 1), ROWS_PER_PAGE):
            page += 1
            fig = plt.figure(figsize=A4)
            fig.text(0.5, 0.955, "点位在线情况 / state of every channel", ha="center", fontsize=12)
            for x, h in zip(xs, heads, strict=True):
                fig.text(x, 0.925, h, fontsize=6.5, weight="bold")
            y = 0.905
            for f in ordered[first:first + ROWS_PER_PAGE]:
                cells = [f.channel_id, (f.name or "")[:12], fmt_duration(f.online_s), fmt_duration(f.offline_s),
                         fmt_duration(f.unknown_s), str(f.outages), fmt_duration(f.longest_outage_s),
                         _pct(f.availability)]
                low = f.availability is not None and f.availability < res.threshold
                for x, c in zip(xs, cells, strict=True):
                    fig.text(x, y, c, fontsize=6.5, color="red" if low else "black")
                y -= 0.0165
            _footer(fig, att, page)
            pdf.savefig(fig)
            plt.close(fig)


def render(res: PeriodResult, att: Attestation, fmt: str, path: Path, *, worst: int = 10) -> None:
    """Write the report in ``fmt`` (csv, xlsx, pdf) to ``path``."""
    if fmt == "csv":
        with open(path, "w", encoding="utf-8-sig", newline="") as fh:
            write_csv(res, att, fh)
    elif fmt == "xlsx":
        write_xlsx(res, att, path)
    elif fmt == "pdf":
        write_pdf(res, att, path, worst=worst)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def read_csv_channels(text: str) -> list[dict[str, str]]:
    """The channel table of a CSV written by :func:`write_csv` (used by tests and auditors' scripts)."""
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    reader = csv.reader(lines)
    heads = next(reader)
    keys = {h: k for k, h in CHANNEL_COLUMNS}
    return [{keys[h]: v for h, v in zip(heads, row, strict=True)} for row in reader]


def columns() -> Sequence[str]:
    return [k for k, _ in CHANNEL_COLUMNS]
