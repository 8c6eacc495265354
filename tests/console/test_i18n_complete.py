"""Every string the console shows exists in both languages (issue 18, "Shell and quality").

The console modules under ``ops_portal/web/console`` are read as text: the ``zh`` and ``en`` dictionaries of
``i18n.js`` and the two objects of every ``extend({...}, {...})`` call are evaluated by node (object literals only,
no module is run), and every key the modules hand to ``t()`` is collected: literal keys, the literals of a
conditional argument (``t(ok ? "a.b" : "a.c")``), the prefix of a built key (``t("x." + k)``,
``t(`x.${k}`)``, which must have keys) and the ``label: "x.y"`` entries of the menus and column tables the
modules translate with ``t(n.label)``.  The test asserts that every used key exists in Chinese and in English and
that the two languages have the same keys, dictionary by dictionary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CONSOLE = Path(__file__).resolve().parents[2] / "ops_portal" / "web" / "console"
NODE = shutil.which("node") or "/usr/bin/node"
KEY = r"[a-z][a-z0-9_]*(?:\.[A-Za-z0-9_\-]+)+"


def _skip_string(src: str, i: int) -> int:
    """The index after the string literal (or template literal, without nesting) starting at ``src[i]``."""
    quote = src[i]
    i += 1
    while src[i] != quote:
        i += 2 if src[i] == "\\" else 1
    return i + 1


def _skip_comment(src: str, i: int) -> int:
    if src.startswith("//", i):
        end = src.find("\n", i)
        return len(src) if end < 0 else end
    return src.index("*/", i + 2) + 2


def _balanced(src: str, i: int) -> int:
    """The index after the bracketed expression that opens at ``src[i]`` (strings and comments skipped)."""
    pairs = {"(": ")", "{": "}", "[": "]"}
    stack = [pairs[src[i]]]
    i += 1
    while stack:
        c = src[i]
        if c in "\"'`":
            i = _skip_string(src, i)
            continue
        if src.startswith("//", i) or src.startswith("/*", i):
            i = _skip_comment(src, i)
            continue
        if c in pairs:
            stack.append(pairs[c])
        elif c in ")}]":
            assert c == stack.pop(), f"unbalanced {c!r} at {i}"
        i += 1
    return i


def _split_top(args: str) -> list[str]:
    """The top-level comma-separated parts of a call's argument text."""
    parts, start, i = [], 0, 0
    while i < len(args):
        c = args[i]
        if c in "\"'`":
            i = _skip_string(args, i)
            continue
        if args.startswith("//", i) or args.startswith("/*", i):
            i = _skip_comment(args, i)
            continue
        if c in "({[":
            i = _balanced(args, i)
            continue
        if c == ",":
            parts.append(args[start:i])
            start = i + 1
        i += 1
    parts.append(args[start:])
    return [p.strip() for p in parts if p.strip()]


def _evaluate(expressions: list[str]) -> list[dict[str, str]]:
    """Object literals evaluated by node (``Function``, no module loaded), as dictionaries."""
    script = ("const src = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(src.map((e) => Function('return (' + e + ');')())));")
    out = subprocess.run([NODE, "-e", script], input=json.dumps(expressions), capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def _sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(CONSOLE.glob("*.js"))}


def _dictionaries(sources: dict[str, str]) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(module, what, zh, en) for i18n.js's own dictionaries and every extend() call."""
    found: list[tuple[str, str, str, str]] = []
    src = sources["i18n.js"]
    literal = {}
    for name in ("zh", "en"):
        m = re.search(rf"^const {name} = \{{", src, re.M)
        assert m, f"i18n.js: const {name} = {{...}} not found"
        start = m.end() - 1
        literal[name] = src[start:_balanced(src, start)]
    found.append(("i18n.js", "dictionaries", literal["zh"], literal["en"]))
    for module, text in sources.items():
        for m in re.finditer(r"(?<![\w.$])extend\(", text):
            if module == "i18n.js":
                continue  # the definition and its comment
            start = m.end() - 1
            args = _split_top(text[start + 1:_balanced(text, start) - 1])
            line = text.count("\n", 0, start) + 1
            assert len(args) == 2, f"{module}:{line}: extend() with {len(args)} arguments"
            found.append((module, f"extend() at line {line}", args[0], args[1]))
    values = _evaluate([e for _, _, zh, en in found for e in (zh, en)])
    return [(module, what, values[2 * i], values[2 * i + 1]) for i, (module, what, _, _) in enumerate(found)]


def _strip_comments(text: str) -> str:
    """The module without its comments (strings kept), so that prose about t() is not read as a call."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            j = _skip_string(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i) or text.startswith("/*", i):
            i = _skip_comment(text, i)
        elif c == "/" and re.search(r"[(,=:;!&|?{}\n]\s*$", "".join(out[-3:])):
            # a regular expression literal: copy it up to its closing slash
            j = i + 1
            in_class = False
            while text[j] != "/" or in_class:
                if text[j] == "\\":
                    j += 1
                elif text[j] == "[":
                    in_class = True
                elif text[j] == "]":
                    in_class = False
                j += 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _used(sources: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """({key: modules}, {prefix: modules}) of what the modules translate."""
    keys: dict[str, set[str]] = {}
    prefixes: dict[str, set[str]] = {}
    for module, raw in sources.items():
        text = _strip_comments(raw)
        for m in re.finditer(r"(?<![\w.$])t\(", text):
            start = m.end() - 1
            args = _split_top(text[start + 1:_balanced(text, start) - 1])
            if not args:
                continue
            first = args[0]
            if re.fullmatch(r'"[^"]*"|\'[^\']*\'', first):
                keys.setdefault(first[1:-1], set()).add(module)
                continue
            built = re.match(r'["\']([^"\']*)["\']\s*\+', first) or re.match(r"`([^`$]*)\$\{", first)
            if built:
                prefixes.setdefault(built.group(1), set()).add(module)
                continue
            for lit in re.findall(r'\?\s*"([^"]+)"\s*:\s*"([^"]+)"', first):
                for key in lit:
                    keys.setdefault(key, set()).add(module)
        # menu and column tables: { label: "nav.x" } translated with t(n.label) / t(col.label)
        if re.search(r"(?<![\w.$])t\(\w+\.label\)", text):
            for key in re.findall(rf'\blabel:\s*"({KEY})"', text):
                keys.setdefault(key, set()).add(module)
    return keys, prefixes


@pytest.fixture(scope="module")
def words() -> tuple[list[tuple[str, str, dict[str, str], dict[str, str]]], dict[str, str], dict[str, str]]:
    if not Path(NODE).exists():
        pytest.skip("node is needed to read the console's dictionaries")
    dictionaries = _dictionaries(_sources())
    zh: dict[str, str] = {}
    en: dict[str, str] = {}
    for _, _, z, e in dictionaries:
        zh.update(z)
        en.update(e)
    return dictionaries, zh, en


def test_dictionaries_found(words) -> None:
    dictionaries, zh, en = words
    modules = {module for module, *_ in dictionaries}
    assert {"i18n.js", "app.js", "devices.js"} <= modules, modules
    assert len(zh) > 500 and len(en) > 500
    assert zh["nav.dashboard"] == "总览" and en["nav.dashboard"] == "Dashboard"


def test_zh_and_en_have_the_same_keys(words) -> None:
    dictionaries, _, _ = words
    problems = []
    for module, what, zh, en in dictionaries:
        only_zh, only_en = sorted(set(zh) - set(en)), sorted(set(en) - set(zh))
        if only_zh or only_en:
            problems.append(f"{module} {what}: only in zh {only_zh}, only in en {only_en}")
        empty = sorted(k for k in zh if not str(zh[k]).strip() or not str(en.get(k, "x")).strip())
        if empty:
            problems.append(f"{module} {what}: empty words {empty}")
    assert not problems, "\n".join(problems)


def test_every_used_key_has_words_in_both_languages(words) -> None:
    _, zh, en = words
    keys, prefixes = _used(_sources())
    assert "nav.dashboard" in keys and "login.submit" in keys, "the scan finds no t() calls"
    missing = []
    for key, modules in sorted(keys.items()):
        for lang, words_ in (("zh", zh), ("en", en)):
            if key not in words_:
                missing.append(f"{key!r} ({lang}) used in {', '.join(sorted(modules))}")
    for prefix, modules in sorted(prefixes.items()):
        for lang, words_ in (("zh", zh), ("en", en)):
            if not any(k.startswith(prefix) for k in words_):
                missing.append(f"prefix {prefix!r}* ({lang}) used in {', '.join(sorted(modules))}")
    assert not missing, "keys without words:\n" + "\n".join(missing)


def test_the_scan_sees_a_missing_key(tmp_path: Path) -> None:
    """The checker itself: a module using an unknown key and an extend() with a key in one language only."""
    sources = {
        "i18n.js": 'const zh = {\n  "a.b": "甲",\n};\nconst en = {\n  "a.b": "A",\n};\n',
        "page.js": ('extend({ "p.one": "一", "p.two": "二" }, { "p.one": "One" });\n'
                    'h("p", null, t("p.one"), t("p.three"), t(ok ? "a.b" : "p.four"), t("q." + k));\n'
                    '// t("p.in_a_comment") is prose\n'),
    }
    dictionaries = _dictionaries(sources)
    assert [(m, set(z), set(e)) for m, _, z, e in dictionaries] == [
        ("i18n.js", {"a.b"}, {"a.b"}), ("page.js", {"p.one", "p.two"}, {"p.one"})]
    keys, prefixes = _used(sources)
    assert set(keys) == {"p.one", "p.three", "a.b", "p.four"}
    assert set(prefixes) == {"q."}
