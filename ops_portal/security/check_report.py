"""The security check as PDF (matplotlib, CJK font) and XLSX (openpyxl) files, times in Beijing time.

The font set-up, page size and attestation footer (report id, generation time, the audit checkpoint
current at generation, the SHA-256 of the report's JSON) are those of the availability reports
(:mod:`ops_portal.availability.reports`).  Figures are built without pyplot, so rendering needs no lock.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

from gbcore.log import get_logger
from gbcore.settings import Settings
from gbcore.timeutil import to_device_time
from ops_portal.availability.reports import A4, Attestation, _footer, _setup_font
from security.check import SEVERITY_ORDER, CheckReport

__all__ = ["MEDIA_TYPES", "SEVERITY_WORDS", "TITLE", "TITLE_EN", "check_report_file", "render", "report_sha256",
           "write_pdf", "write_xlsx"]

log = get_logger("gbops.portal.security_check")

TITLE = "平台安全检查报告"
TITLE_EN = "Platform security check"
SEVERITY_WORDS = {"critical": "严重 / critical", "warning": "警告 / warning", "info": "提示 / info"}
MEDIA_TYPES = {"pdf": "application/pdf",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
#: Subjects listed per finding in the PDF (the XLSX lists every one).
PDF_SUBJECTS = 40


def report_sha256(report: CheckReport) -> str:
    """SHA-256 of the report's canonical JSON (what the files attest)."""
    data = json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _local(report: CheckReport) -> str:
    return f"{to_device_time(report.generated_at):%Y-%m-%d %H:%M:%S} (北京时间 / Beijing time)"


def summary_pairs(report: CheckReport) -> list[tuple[str, Any]]:
    counts = report.counts
    pairs: list[tuple[str, Any]] = [("检查时间 / checked at", _local(report))]
    pairs += [(f"{SEVERITY_WORDS[s]}", counts[s]) for s in SEVERITY_ORDER]
    pairs.append(("发现总数 / findings", len(report.findings)))
    for key, label in (("users", "用户数 / users"), ("devices", "设备数 / devices"),
                       ("advisories", "漏洞列表条目 / advisories"), ("duration_s", "耗时(秒) / took s")):
        value = report.checked.get(key)
        pairs.append((label, "—" if value is None else value))
    return pairs


# ---------------------------------------------------------------------------------------------- XLSX
def write_xlsx(report: CheckReport, att: Attestation, path: Path) -> None:
    from openpyxl import Workbook

    from ops_portal.availability.reports import xlsx_row

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("汇总 Summary")
    ws.append([f"{TITLE} / {TITLE_EN}"])
    for k, v in summary_pairs(report):
        ws.append([k, v])
    ws.append([])
    for line in att.lines():
        ws.append([line])

    ws = wb.create_sheet("发现 Findings")
    ws.append(["级别 / severity", "代码 / code", "标题 / title", "数量 / count", "修复 / fix", "公告 / advisory"])
    for f in report.findings:
        ws.append(xlsx_row([SEVERITY_WORDS[f.severity], f.code, f.title, len(f.subjects), f.fix, f.ref or ""]))

    ws = wb.create_sheet("对象 Subjects")
    ws.append(["级别 / severity", "代码 / code", "标题 / title", "类型 / kind", "编号 / id", "名称 / name",
               "说明 / detail"])
    for f in report.findings:
        for s in f.subjects:
            ws.append(xlsx_row([SEVERITY_WORDS[f.severity], f.code, f.title, s.kind, s.id, s.name, s.detail]))
    wb.save(path)


# ---------------------------------------------------------------------------------------------- PDF
def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` columns (CJK characters count two), breaking at spaces where possible."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for ch in para:
            if _width(line + ch) > width:
                cut = line.rfind(" ")
                if cut > len(line) // 2:
                    lines.append(line[:cut])
                    line = line[cut + 1:]
                else:
                    lines.append(line)
                    line = ""
            line += ch
        lines.append(line)
    return lines


_COLORS = {"critical": "#c62828", "warning": "#b26a00", "info": "#1f5fa8"}


class _Pages:
    """A cursor over A4 pages: text lines go down the page, a new page starts when it is full."""

    def __init__(self, pdf: Any, att: Attestation) -> None:
        self.pdf, self.att = pdf, att
        self.page = 0
        self.fig: Any = None
        self.y = 0.0

    def new_page(self) -> None:
        from matplotlib.figure import Figure

        self.close_page()
        self.page += 1
        self.fig = Figure(figsize=A4)
        self.y = 0.95

    def close_page(self) -> None:
        if self.fig is not None:
            _footer(self.fig, self.att, self.page)
            self.pdf.savefig(self.fig)
            self.fig = None

    def text(self, x: float, s: str, *, size: float = 8.0, step: float = 0.0145, **kw: Any) -> None:
        if self.fig is None or self.y < 0.085:
            self.new_page()
        self.fig.text(x, self.y, s, fontsize=size, va="top", **kw)
        self.y -= step

    def gap(self, h: float = 0.008) -> None:
        self.y -= h


def write_pdf(report: CheckReport, att: Attestation, path: Path) -> None:
    _setup_font()
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path, metadata={"Title": f"{TITLE} / {TITLE_EN}", "Creator": "gbops"}) as pdf:
        pages = _Pages(pdf, att)
        pages.new_page()
        pages.text(0.5, TITLE, size=20, step=0.03, ha="center")
        pages.text(0.5, TITLE_EN, size=11, step=0.03, ha="center")
        for k, v in summary_pairs(report):
            pages.fig.text(0.08, pages.y, k, fontsize=9, va="top")
            pages.text(0.50, str(v), size=9, step=0.018)
        pages.gap(0.01)
        if not report.findings:
            pages.text(0.08, "未发现问题 / no finding", size=11, step=0.03)
        for f in report.findings:
            if pages.y < 0.2:
                pages.new_page()
            pages.gap()
            color = _COLORS[f.severity]
            for i, line in enumerate(_wrap(f"[{SEVERITY_WORDS[f.severity]}] {f.title} ({len(f.subjects)})", 96)):
                pages.text(0.06 if i == 0 else 0.08, line, size=9.5, step=0.017, color=color)
            for line in _wrap(f"修复 / fix: {f.fix}", 128):
                pages.text(0.08, line, size=7.5, step=0.0135)
            for s in f.subjects[:PDF_SUBJECTS]:
                label = f"{s.id}{' ' + s.name if s.name else ''}: {s.detail}"
                for i, line in enumerate(_wrap(label, 132)):
                    pages.text(0.10 if i == 0 else 0.12, ("• " if i == 0 else "") + line, size=7, step=0.0125)
            if len(f.subjects) > PDF_SUBJECTS:
                more = len(f.subjects) - PDF_SUBJECTS
                pages.text(0.10, f"…… 另有 {more} 项，见 XLSX / {more} more, see the XLSX", size=7, step=0.0125)
        pages.close_page()


def render(report: CheckReport, att: Attestation, fmt: str, path: Path) -> None:
    if fmt == "pdf":
        write_pdf(report, att, path)
    elif fmt == "xlsx":
        write_xlsx(report, att, path)
    else:
        raise ValueError(f"unknown format {fmt!r}")


async def _checkpoint(audit: Any, settings: Settings, sessionmaker: Any) -> tuple[str | None, int | None, str | None]:
    """The audit checkpoint current now (signed now when the log is at hand), as the availability reports do."""
    cp = None
    if audit is not None:
        try:
            cp = await audit.checkpoint()
        except Exception as exc:  # a tampered log: say so in the log, attest the newest signed one
            log.error("security_check.checkpoint_failed", error=str(exc))
            cp = await audit.latest_checkpoint()
        origin = audit.origin
    else:
        from audit_log.store import AuditStore

        cp = await AuditStore(sessionmaker).latest_checkpoint()
        origin = settings.audit_log_origin
    if cp is None:
        return origin, None, None
    return origin, cp.tree_size, base64.b64encode(cp.root_hash).decode()


async def check_report_file(report: CheckReport, fmt: str, *, audit: Any, settings: Settings,
                            sessionmaker: Any) -> tuple[bytes, str, Attestation]:
    """The report as ``fmt`` (pdf | xlsx) bytes, its file name and its attestation (rendered in a thread)."""
    report_id = secrets.token_hex(8)
    origin, size, root = await _checkpoint(audit, settings, sessionmaker)
    att = Attestation(report_id=report_id, generated_at=report.generated_at, source_sha256=report_sha256(report),
                      checkpoint_origin=origin, checkpoint_size=size, checkpoint_root=root)
    name = f"security-check_{to_device_time(report.generated_at):%Y%m%d-%H%M%S}_{report_id}.{fmt}"

    def _render() -> bytes:
        with tempfile.TemporaryDirectory(prefix="gbops-check-") as tmp:
            path = Path(tmp) / name
            render(report, att, fmt, path)
            return path.read_bytes()

    return await asyncio.to_thread(_render), name, att
