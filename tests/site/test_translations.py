"""The Simplified Chinese catalog: complete, compiled, placeholder-safe, and what the admin actually shows.

Partnership managers work in Simplified Chinese (the default language) and can switch to
English with the language cookie. The catalog is ``locale/zh_Hans/LC_MESSAGES/django.po``;
its compiled ``django.mo`` is committed so a fresh machine needs no gettext tools. These
tests read both with the standard library only.
"""

import ast
import io
import re
import struct
import tokenize
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from campaigns.models import Campaign
from tests.factories import CampaignFactory

LOCALE_DIR = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"
PO_PATH = LOCALE_DIR / "django.po"
MO_PATH = LOCALE_DIR / "django.mo"
# Where makemessages finds our strings (it is run with --ignore=.venv --ignore=tests --ignore=var).
SOURCE_PACKAGES = ("crossmkt_site", "campaigns", "analytics")
REFRESH_HINT = "refresh the translations as the README says (makemessages, translate, compilemessages)"


# --- reading the .po and the .mo -------------------------------------------------------------


@dataclass
class PoEntry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False
    line: int = 0

    @property
    def key(self) -> str:
        """The key gettext files it under: ``context\\x04msgid`` with a context, else the msgid."""
        return self.msgid if self.msgctxt is None else f"{self.msgctxt}\x04{self.msgid}"

    @property
    def is_header(self) -> bool:
        return self.msgid == "" and self.msgctxt is None


def _unquote(token: str, path: Path, number: int) -> str:
    token = token.strip()
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise AssertionError(f"{path}:{number}: expected a quoted string, got {token!r}")
    return ast.literal_eval(token)  # PO strings use C escapes (\n, \t, \", \\), which Python reads the same way


def parse_po(path: Path) -> list[PoEntry]:
    """Parse a PO file into entries (header included, obsolete ``#~`` entries flagged)."""
    entries: list[PoEntry] = []
    entry = PoEntry()
    target: tuple[str, int | None] | None = None  # the field a continuation line extends
    seen_msgstr = False

    def finish():
        nonlocal entry, target, seen_msgstr
        if target is not None:
            entries.append(entry)
        entry, target, seen_msgstr = PoEntry(), None, False

    def append(text: str):
        assert target is not None  # the caller checked that a keyword line came first
        name, index = target
        if name == "msgstr":
            assert index is not None  # a msgstr target always carries its index
            entry.msgstr[index] += text
        else:
            setattr(entry, name, (getattr(entry, name) or "") + text)

    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
        if not line:
            finish()
            continue
        if line.startswith("#"):
            if seen_msgstr:
                finish()
            if line.startswith("#,"):
                entry.flags.update(flag.strip() for flag in line[2:].split(",") if flag.strip())
            continue
        if line.startswith('"'):
            if target is None:
                raise AssertionError(f"{path}:{number}: a continuation line outside an entry")
            append(_unquote(line, path, number))
            continue
        keyword, _space, rest = line.partition(" ")
        if keyword in ("msgctxt", "msgid") and seen_msgstr:
            finish()
        entry.obsolete = entry.obsolete or obsolete
        if not entry.line:
            entry.line = number
        if keyword == "msgctxt":
            entry.msgctxt, target = _unquote(rest, path, number), ("msgctxt", None)
        elif keyword == "msgid":
            entry.msgid, target = _unquote(rest, path, number), ("msgid", None)
        elif keyword == "msgid_plural":
            entry.msgid_plural, target = _unquote(rest, path, number), ("msgid_plural", None)
        elif keyword == "msgstr" or re.fullmatch(r"msgstr\[\d+\]", keyword):
            index = int(keyword[7:-1]) if "[" in keyword else 0
            entry.msgstr[index] = _unquote(rest, path, number)
            target, seen_msgstr = ("msgstr", index), True
        else:
            raise AssertionError(f"{path}:{number}: unexpected line {raw!r}")
    finish()
    return entries


def read_mo(path: Path) -> dict[str, str]:
    """Read a GNU MO file into {key: translation}; a plural's forms stay joined by NUL, as stored."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    _magic, _revision, count, originals, translations = struct.unpack(f"{order}5I", data[:20])
    catalog = {}
    for i in range(count):
        id_length, id_offset = struct.unpack(f"{order}2I", data[originals + 8 * i : originals + 8 * i + 8])
        str_length, str_offset = struct.unpack(f"{order}2I", data[translations + 8 * i : translations + 8 * i + 8])
        key = data[id_offset : id_offset + id_length].decode("utf-8")
        catalog[key] = data[str_offset : str_offset + str_length].decode("utf-8")
    return catalog


def expected_mo(entries: list[PoEntry]) -> dict[str, str]:
    """What msgfmt compiles from the entries: translated, not fuzzy, not obsolete; plural forms NUL-joined."""
    catalog = {}
    for entry in entries:
        if entry.obsolete or "fuzzy" in entry.flags or not all(entry.msgstr.values()):
            continue
        key = entry.key if entry.msgid_plural is None else f"{entry.key}\x00{entry.msgid_plural}"
        catalog[key] = "\x00".join(entry.msgstr[index] for index in sorted(entry.msgstr))
    return catalog


@pytest.fixture(scope="module")
def entries() -> list[PoEntry]:
    assert PO_PATH.exists(), f"{PO_PATH} is missing; {REFRESH_HINT}"
    return [entry for entry in parse_po(PO_PATH) if not entry.obsolete]


@pytest.fixture(scope="module")
def messages(entries) -> list[PoEntry]:
    return [entry for entry in entries if not entry.is_header]


# --- placeholders ----------------------------------------------------------------------------

# printf style as Python's % operator reads it (%(name)s, %d, %.2f), and str.format style ({name}, {0}).
PERCENT = re.compile(
    r"%(?:\((?P<name>[^)]*)\))?[#0\- +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?P<conversion>[diouxXeEfFgGcrsa%])"
)
BRACES = re.compile(r"(?<!\{)\{(?P<field>[^{}]*)\}(?!\})")


def placeholders(text: str) -> tuple[Counter[tuple[str, str]], tuple[str, ...], Counter[str]]:
    """Return (named %-placeholders, positional %-placeholders in order, {}-fields) of a string."""
    named: Counter[tuple[str, str]] = Counter()  # (name, conversion)
    positional: list[str] = []
    for match in PERCENT.finditer(text):
        if match["conversion"] == "%":
            continue
        if match["name"] is not None:
            named[(match["name"], match["conversion"])] += 1
        else:
            positional.append(match["conversion"])
    return named, tuple(positional), Counter(match["field"] for match in BRACES.finditer(text))


# --- what the source asks to translate -------------------------------------------------------

# The functions makemessages extracts from (Django's xgettext keywords): name -> (msgid arg, plural arg, context arg).
KEYWORDS = {
    "_": (0, None, None),
    "gettext": (0, None, None),
    "gettext_lazy": (0, None, None),
    "gettext_noop": (0, None, None),
    "ngettext": (0, 1, None),
    "ngettext_lazy": (0, 1, None),
    "pgettext": (1, None, 0),
    "pgettext_lazy": (1, None, 0),
    "npgettext": (1, 2, 0),
    "npgettext_lazy": (1, 2, 0),
}


def _calls_in_python(path: Path):
    """Yield (keyword, [literal string or None per argument], line) for each keyword call in a Python file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in KEYWORDS:
                yield (
                    name,
                    [
                        arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                        for arg in node.args
                    ],
                    node.lineno,
                )


def _calls_in_template(path: Path):
    """Yield keyword calls of a template.

    They are read from the gettext calls Django's templatize (makemessages' own step) writes.
    """
    from django.utils.translation.template import templatize

    tokens = [
        token
        for token in tokenize.generate_tokens(io.StringIO(templatize(path.read_text(encoding="utf-8"))).readline)
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)
    ]
    for at, token in enumerate(tokens[:-1]):
        if token.type != tokenize.NAME or token.string not in KEYWORDS or tokens[at + 1].string != "(":
            continue
        args: list[str | None] = []
        current: str | None = ""  # None once an argument is more than string literals
        depth = 0
        for inner in tokens[at + 2 :]:
            if inner.string in ("(", "[", "{"):
                depth += 1
            elif inner.string in (")", "]", "}") and depth:
                depth -= 1
            elif depth == 0 and inner.string in (",", ")"):
                args.append(current)
                current = ""
                if inner.string == ")":
                    break
                continue
            if current is not None:
                current = current + ast.literal_eval(inner.string) if inner.type == tokenize.STRING else None
        yield token.string, args, token.start[0]


def source_msgids() -> dict[str, str]:
    """Return {gettext key: 'file:line'} for every literal string our code and templates mark for translation."""
    found: dict[str, str] = {}
    for package in SOURCE_PACKAGES:
        for path in sorted((Path(settings.BASE_DIR) / package).rglob("*")):
            if path.suffix == ".py":
                calls = _calls_in_python(path)
            elif path.suffix in (".html", ".txt"):
                calls = _calls_in_template(path)
            else:
                continue
            for name, args, line in calls:
                msgid_at, _plural_at, context_at = KEYWORDS[name]
                if len(args) <= msgid_at or not args[msgid_at]:
                    continue
                if context_at is not None and args[context_at] is None:
                    continue
                key = args[msgid_at] if context_at is None else f"{args[context_at]}\x04{args[msgid_at]}"
                found.setdefault(key, f"{path.relative_to(settings.BASE_DIR)}:{line}")
    return found


# --- the catalog -----------------------------------------------------------------------------


def test_the_catalog_has_a_utf8_header_with_chinese_plural_rules(entries):
    headers = [entry for entry in entries if entry.is_header]
    assert len(headers) == 1, "the .po needs exactly one header entry"
    header = headers[0].msgstr[0]
    assert "charset=UTF-8" in header
    assert "Plural-Forms: nplurals=1; plural=0;" in header
    assert "Language: zh_Hans" in header


def test_every_message_is_translated_and_none_is_fuzzy(entries, messages):
    assert messages, "the catalog is empty"
    fuzzy = [entry.msgid or "(header)" for entry in entries if "fuzzy" in entry.flags]
    untranslated = [
        entry.msgid for entry in messages if not entry.msgstr or not all(s.strip() for s in entry.msgstr.values())
    ]
    assert not fuzzy, f"fuzzy entries (check the translation, then remove the '#, fuzzy' line): {fuzzy}"
    assert not untranslated, f"untranslated: {untranslated}"


def test_chinese_plural_entries_have_exactly_one_form(messages):
    wrong = [entry.msgid for entry in messages if entry.msgid_plural is not None and sorted(entry.msgstr) != [0]]
    assert not wrong, f"Chinese has one plural form (msgstr[0] only): {wrong}"


def test_placeholders_match_between_msgid_and_msgstr(messages):
    mismatched = []
    for entry in messages:
        # One Chinese form serves every count, so it carries the plural msgid's placeholders.
        source = entry.msgid if entry.msgid_plural is None else entry.msgid_plural
        for translation in entry.msgstr.values():
            if placeholders(source) != placeholders(translation):
                mismatched.append((source, translation))
    assert not mismatched, f"placeholders differ: {mismatched}"


def test_the_committed_mo_is_compiled_from_the_current_po():
    entries = parse_po(PO_PATH)
    assert MO_PATH.exists(), f"{MO_PATH} is missing; run: python manage.py compilemessages --ignore=.venv"
    compiled = read_mo(MO_PATH)
    expected = expected_mo(entries)
    compiled.pop("", None), expected.pop("", None)  # the header carries dates that makemessages refreshes
    missing = sorted(set(expected) - set(compiled))
    stale = sorted(key for key in set(expected) & set(compiled) if expected[key] != compiled[key])
    extra = sorted(set(compiled) - set(expected))
    assert not (missing or stale or extra), (
        "django.mo is out of date with django.po; run: python manage.py compilemessages --ignore=.venv\n"
        f"missing: {missing[:10]}\nchanged: {stale[:10]}\nno longer in the .po: {extra[:10]}"
    )


def test_every_string_our_code_marks_for_translation_is_in_the_catalog(messages):
    in_catalog = {entry.key for entry in messages}
    missing = {key: where for key, where in source_msgids().items() if key not in in_catalog}
    assert not missing, f"strings not in the catalog yet ({REFRESH_HINT}):\n" + "\n".join(
        f"  {where}: {key!r}" for key, where in sorted(missing.items(), key=lambda item: item[1])
    )


# --- what a partnership manager sees ---------------------------------------------------------


def in_english(client):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "en"
    return client


CHINESE_INDEX = [
    "crossmkt 跨界营销",
    "跨界合作、营销活动与效果分析",
    "合作与营销活动",
    "用户、行为与分析",
    "营销活动",
    "合作伙伴",
    "合作协议",
    "规则",
    "权益",
    "核销台账",
    "终端用户",
    "行为事件",
]
ENGLISH_INDEX = [
    "crossmkt cross-marketing",
    "Partnerships, campaigns and analytics",
    "Partnerships and campaigns",
    "Users, behaviour and analytics",
    "Campaigns",
    "Partners",
    "Deals",
    "Rules",
    "Offers",
    "Redemption ledger",
    "End users",
    "Behaviour events",
]


@pytest.mark.django_db
def test_the_admin_index_speaks_chinese_by_default(manager_client):
    page = manager_client.get(reverse("admin:index")).content.decode()

    assert 'lang="zh-hans"' in page
    assert [label for label in CHINESE_INDEX if label not in page] == []
    assert [label for label in ENGLISH_INDEX if label in page] == []


@pytest.mark.django_db
def test_the_admin_index_speaks_english_with_the_language_cookie(manager_client):
    page = in_english(manager_client).get(reverse("admin:index")).content.decode()

    assert 'lang="en"' in page
    assert [label for label in ENGLISH_INDEX if label not in page] == []
    assert [label for label in CHINESE_INDEX if label in page] == []


@pytest.fixture
def campaign():
    return CampaignFactory.create(name="Member day", status=Campaign.Status.RUNNING, kind=Campaign.Kind.RULES)


CHINESE_CHANGELIST = [
    "营销活动",
    "标识",
    "名称",
    "主办方",
    "开始时间",
    "预算（元）",
    "预算占用（元）",
    "已发放权益数",
    "对照组比例",
    "进行中",
    "按规则",
    "草稿",
    "外部实验",
]
ENGLISH_CHANGELIST = [
    "Campaigns",
    "Slug",
    "Owner",
    "Starts at",
    "Budget (CNY)",
    "Budget held (CNY)",
    "Offers issued",
    "Holdout share",
    "Running",
    "Rule-based",
    "Draft",
    "External experiment",
]


@pytest.mark.django_db
def test_the_campaign_list_speaks_chinese_by_default(manager_client, campaign):
    page = manager_client.get(reverse("admin:campaigns_campaign_changelist")).content.decode()

    assert "Member day" in page
    assert [label for label in CHINESE_CHANGELIST if label not in page] == []
    assert [label for label in ENGLISH_CHANGELIST if label in page] == []


@pytest.mark.django_db
def test_the_campaign_list_speaks_english_with_the_language_cookie(manager_client, campaign):
    page = in_english(manager_client).get(reverse("admin:campaigns_campaign_changelist")).content.decode()

    assert "Member day" in page
    assert [label for label in ENGLISH_CHANGELIST if label not in page] == []
    assert [label for label in CHINESE_CHANGELIST if label in page] == []
