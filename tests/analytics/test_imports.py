"""CSV imports as an analyst meets them: good rows in, every bad row named, nothing twice, any encoding."""

import codecs
import io
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command

from analytics.models import BehaviorEvent, EndUser, ImportedBehavior
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

EVENTS_HEADER = "event_id,user_id,partner,kind,item_id,amount,occurred_at"


@pytest.fixture
def partners():
    return PartnerFactory.create(slug="zhixue", kind="knowledge"), PartnerFactory.create(slug="yingshi", kind="video")


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def run(command, *args):
    out = io.StringIO()
    call_command(command, *args, "--no-progress", stdout=out)
    return out.getvalue()


MIXED_EVENTS = "\n".join(
    [
        EVENTS_HEADER,
        "e1,u1,yingshi,film_watch,F001,0,2026-03-01T20:00:00+08:00",  # 2 good
        "e2,u1,zhixue,course_purchase,C001,199.00,2026-03-02 10:00:00",  # 3 good, naive = Shanghai
        ",u2,zhixue,course_view,C001,0,2026-03-02T10:00:00Z",  # 4 missing event id
        "e4,,zhixue,course_view,C001,0,2026-03-02T10:00:00Z",  # 5 missing user id
        "e5,u2,zhixue,course_purchase,C001,abc,2026-03-02T10:00:00Z",  # 6 non-numeric amount
        "e6,u2,zhixue,course_purchase,C001,-5.00,2026-03-02T10:00:00Z",  # 7 negative amount
        "e7,u2,zhixue,teleport,C001,0,2026-03-02T10:00:00Z",  # 8 unknown kind
        "e8,u2,netflix,film_watch,F001,0,2026-03-02T10:00:00Z",  # 9 unknown partner
        "e9,u2,zhixue,course_view,C001,0,yesterday",  # 10 unparseable time
        "e10,u2,zhixue,course_view,C001,0,2031-01-01T00:00:00Z",  # 11 far future
        "e11,u3,zhixue,activity_join,A1,0,2026-03-03T09:00:00Z",  # 12 good
        "e12,u3,zhixue,course_view,C001,0",  # 13 too few fields
        "e1,u1,yingshi,film_watch,F001,0,2026-03-01T20:00:00+08:00",  # 14 duplicate of line 2
    ]
)


def test_mixed_file_imports_exactly_the_good_rows_and_names_every_bad_one(tmp_path, partners):
    # given a file mixing good rows with each kind of bad row
    path = write(tmp_path, "events.csv", MIXED_EVENTS)

    # when it is imported
    out = run("import_events", path)

    # then the three good rows are in, the duplicate is skipped, and every bad line is named with its reason
    assert "3 events imported, 1 duplicates skipped, 9 rejected" in out
    expected = {
        4: "event_id: missing",
        5: "user_id: missing",
        6: "amount: not a number: 'abc'",
        7: "amount: negative amount: -5.00",
        8: "kind: unknown kind 'teleport'",
        9: "partner: unknown partner 'netflix'",
        10: "occurred_at: not an ISO 8601 time",
        11: "occurred_at: in the future",
        13: "expected 7 fields, found 6",
    }
    for line, reason in expected.items():
        assert f"rejected line {line}: " in out and reason in out.split(f"rejected line {line}: ")[1].splitlines()[0], (
            line
        )
    assert sorted(BehaviorEvent.objects.values_list("event_id", flat=True)) == ["e1", "e11", "e2"]
    # a bad row never half-writes a user: u2 appears only in bad rows
    assert set(EndUser.objects.values_list("external_id", flat=True)) == {"u1", "u3"}
    purchase = BehaviorEvent.objects.get(event_id="e2")
    assert purchase.amount == Decimal("199.00")
    assert purchase.occurred_at == datetime(2026, 3, 2, 10, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert BehaviorEvent.objects.get(event_id="e1").occurred_at == datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_reimporting_the_same_file_changes_nothing(tmp_path, partners):
    path = write(tmp_path, "events.csv", MIXED_EVENTS)
    run("import_events", path)
    before = list(BehaviorEvent.objects.order_by("pk").values())

    out = run("import_events", path)

    assert "0 events imported, 4 duplicates skipped, 9 rejected" in out
    assert list(BehaviorEvent.objects.order_by("pk").values()) == before
    # u1 sent by yingshi and by zhixue is two people (identity is per partner), and u3
    assert EndUser.objects.count() == 3


def test_new_users_from_events_get_no_consent(tmp_path, partners):
    run("import_events", write(tmp_path, "e.csv", MIXED_EVENTS))
    user = EndUser.objects.get(external_id="u1", home_partner__slug="yingshi")
    assert (user.marketing_consent, user.data_sharing_consent) == (False, False)
    assert list(user.events.values_list("partner__slug", flat=True)) == ["yingshi"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_behavior_table_with_chinese_values_in_any_common_encoding(tmp_path, partners, encoding):
    # given the article's per-user table as exported by a Chinese spreadsheet tool
    text = "\n".join(
        [
            "user_id,watching_count,purchasing_count,age,education,occupation,purchased_course,渠道备注",
            "u1,15,7,25,本科,数据分析师,1,朋友推荐",
            "u2,3,0,41,硕士,教师,否,",
        ]
    )
    path = write(tmp_path, "user_behavior.csv", text, encoding)

    # when imported
    out = run("import_behavior", path)

    # then the Chinese values arrive intact, and the unknown column is kept with the row
    assert "2 users imported, 0 duplicates skipped, 0 rejected" in out
    u1 = EndUser.objects.get(external_id="u1")
    assert (u1.age, u1.education, u1.occupation) == (25, "本科", "数据分析师")
    assert u1.home_partner.slug == "zhixue"
    behaviour = ImportedBehavior.objects.get(user=u1)
    assert (behaviour.watching_count, behaviour.purchasing_count, behaviour.purchased_course) == (15, 7, True)
    assert behaviour.extra == {"渠道备注": "朋友推荐"}
    assert ImportedBehavior.objects.get(user__external_id="u2").purchased_course is False


def test_behavior_reimport_adds_nothing_and_a_change_updates_one_row(tmp_path, partners):
    rows = [
        "user_id,watching_count,purchasing_count,age,education,occupation,purchased_course",
        "u1,15,7,25,本科,工程师,1",
        "u2,3,0,41,硕士,教师,0",
    ]
    run("import_behavior", write(tmp_path, "a.csv", "\n".join(rows)))
    assert "0 users imported, 2 duplicates skipped" in run("import_behavior", write(tmp_path, "a.csv", "\n".join(rows)))
    rows[2] = "u2,4,0,41,硕士,教师,0"
    assert "1 users imported, 1 duplicates skipped" in run("import_behavior", write(tmp_path, "b.csv", "\n".join(rows)))
    assert ImportedBehavior.objects.get(user__external_id="u2").watching_count == 4


def test_behavior_bad_rows_are_named(tmp_path, partners):
    text = "\n".join(
        [
            "user_id,watching_count,purchasing_count,age,education,occupation,purchased_course",
            "u1,-1,0,25,本科,工程师,1",
            "u2,3,x,25,本科,工程师,1",
            "u3,3,0,250,本科,工程师,1",
            "u4,3,0,25,本科,工程师,maybe",
            "u5,3,0,,本科,工程师,",
        ]
    )
    out = run("import_behavior", write(tmp_path, "b.csv", text))
    assert "1 users imported, 0 duplicates skipped, 4 rejected" in out
    assert "line 2: watching_count" in out and "line 3: purchasing_count" in out
    assert "line 4: age" in out and "line 5: purchased_course" in out
    assert list(EndUser.objects.values_list("external_id", flat=True)) == ["u5"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("user,kind\n1,2\n", "wrong header"),
        ("", "is empty"),
        (None, "file not found"),
    ],
)
def test_unusable_files_fail_with_one_clear_line(tmp_path, partners, content, message):
    path = tmp_path / "events.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match=message):
        run("import_events", path)


def test_undecodable_file_says_so(tmp_path, partners):
    path = tmp_path / "events.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + EVENTS_HEADER.encode("utf-16-le"))
    with pytest.raises(CommandError):
        run("import_events", path)
    with pytest.raises(CommandError, match="unknown encoding"):
        run("import_events", write(tmp_path, "ok.csv", EVENTS_HEADER), "--encoding", "klingon")


GOOD_EVENTS = [
    "e1,u1,zhixue,course_view,C001,0,2026-03-01T10:00:00Z",
    "e2,u2,zhixue,course_view,C001,0,2026-03-01T10:00:00Z",
    "e3,u3,zhixue,course_purchase,C001,99.00,2026-03-01T10:00:00Z",
]


def rejected_lines(out):
    """Map each rejected line number in a command's output to 'column: reason'."""
    found = {}
    for text in out.splitlines():
        if text.strip().startswith("rejected line "):
            number, rest = text.strip().removeprefix("rejected line ").split(": ", 1)
            found[int(number)] = rest
    return found


@pytest.mark.parametrize("column", range(7))
def test_a_nul_byte_rejects_its_line_by_column_and_the_rest_import(tmp_path, partners, column):
    # given a file whose third row has a NUL byte in one field (PostgreSQL refuses NUL in text)
    bad = ["e9", "u9", "zhixue", "course_view", "C001", "0", "2026-03-01T10:00:00Z"]
    bad[column] = bad[column][:1] + "\x00" + bad[column][1:]
    path = write(tmp_path, "events.csv", "\n".join([EVENTS_HEADER, *GOOD_EVENTS[:2], ",".join(bad), GOOD_EVENTS[2]]))

    # when it is imported
    out = run("import_events", path)

    # then the good rows are in and the bad line is named with its column and the reason
    assert "3 events imported, 0 duplicates skipped, 1 rejected" in out
    name = EVENTS_HEADER.split(",")[column]
    assert rejected_lines(out) == {4: f"{name}: contains a NUL byte"}
    assert sorted(BehaviorEvent.objects.values_list("event_id", flat=True)) == ["e1", "e2", "e3"]
    assert not EndUser.objects.filter(external_id__startswith="u9").exists()


BEHAVIOR_HEADER = "user_id,watching_count,purchasing_count,age,education,occupation,purchased_course"


def test_behavior_nul_byte_rejects_its_line_and_the_rest_import(tmp_path, partners):
    # given a per-user table with a NUL in an occupation and another in a column kept as extra
    text = "\n".join(
        [
            BEHAVIOR_HEADER + ",note",
            "u1,15,7,25,本科,工程师,1,ok",
            "u2,3,0,41,硕士,教\x00师,0,ok",
            "u3,3,0,41,硕士,教师,0,b\x00d",
            "u4,1,0,30,本科,教师,0,",
        ]
    )

    out = run("import_behavior", write(tmp_path, "b.csv", text))

    assert "2 users imported, 0 duplicates skipped, 2 rejected" in out
    assert rejected_lines(out) == {3: "occupation: contains a NUL byte", 4: "note: contains a NUL byte"}
    assert sorted(EndUser.objects.values_list("external_id", flat=True)) == ["u1", "u4"]


def test_a_blank_age_is_unknown_and_the_other_rows_import(tmp_path, partners):
    # given a per-user table where one row leaves age blank
    text = "\n".join([BEHAVIOR_HEADER, "u1,15,7,25,本科,工程师,1", "u2,3,0,,硕士,教师,0", "u3,4,1,33,本科,教师,1"])

    out = run("import_behavior", write(tmp_path, "b.csv", text))

    # then the whole file is imported, u2 with an unknown age
    assert "3 users imported, 0 duplicates skipped, 0 rejected" in out
    assert dict(EndUser.objects.values_list("external_id", "age")) == {"u1": 25, "u2": None, "u3": 33}


def test_blank_optional_cells_leave_what_is_stored(tmp_path, partners):
    # given a user imported once with a gender and a sign-up time
    header = BEHAVIOR_HEADER + ",gender,signed_up_at"
    run(
        "import_behavior",
        write(tmp_path, "a.csv", "\n".join([header, "u1,1,0,25,本科,工程师,1,女,2026-01-05T08:00:00Z"])),
    )

    # when a later file leaves gender and signed_up_at blank for them and for a new user
    text = "\n".join(
        [
            header,
            "u1,2,0,26,本科,工程师,1,,",
            "u2,3,0,41,硕士,教师,0,男,2026-02-01T08:00:00Z",
            "u3,4,1,33,本科,教师,1,,",
        ]
    )
    out = run("import_behavior", write(tmp_path, "b.csv", text))

    # then every row is imported; a blank optional cell keeps what was stored, and a new user has none
    assert "3 users imported, 0 duplicates skipped, 0 rejected" in out
    u1 = EndUser.objects.get(external_id="u1")
    assert (u1.age, u1.gender, u1.signed_up_at) == (26, "女", datetime(2026, 1, 5, 8, tzinfo=UTC))
    u3 = EndUser.objects.get(external_id="u3")
    assert (u3.gender, u3.signed_up_at) == ("", None)


def test_an_unterminated_quote_rejects_its_line_and_the_lines_it_swallowed_import(tmp_path, partners):
    # given a quote opened in item_id on line 3 and never closed, followed by eight good rows
    following = [f"f{n},u{n},zhixue,course_view,C001,0,2026-03-01T10:00:00Z" for n in range(8)]
    text = "\n".join(
        [EVENTS_HEADER, GOOD_EVENTS[0], 'e2,u2,zhixue,course_view,"C001,0,2026-03-01T10:00:00Z', *following]
    )

    out = run("import_events", write(tmp_path, "events.csv", text))

    # then only line 3 is rejected, naming the column where the quote opened; the eight rows after it import
    assert "9 events imported, 0 duplicates skipped, 1 rejected" in out
    assert list(rejected_lines(out)) == [3]
    assert rejected_lines(out)[3].startswith("item_id: quote not closed")
    assert BehaviorEvent.objects.count() == 9 and not BehaviorEvent.objects.filter(event_id="e2").exists()


def test_a_quote_closed_lines_later_still_rejects_only_its_line(tmp_path, partners):
    # given a quote left open in amount on line 2 that a stray quote closes on line 5, so the swallowed
    # text has the right number of fields, and a text after a closing quote on line 7
    text = "\n".join(
        [
            EVENTS_HEADER,
            'e1,u1,zhixue,course_view,C001,0,"2026-03-01T10:00:00Z',
            "e2,u2,zhixue,course_view,C001,0,2026-03-01T10:00:00Z",
            "e3,u3,zhixue,course_view,C001,0,2026-03-01T10:00:00Z",
            'e4,u4,zhixue,course_view,C001,0,2026-03-01T10:00:00Z"',
            "e5,u5,zhixue,course_view,C001,0,2026-03-01T10:00:00Z",
            'e6,"u6"x,zhixue,course_view,C001,0,2026-03-01T10:00:00Z',
            "e7,u7,zhixue,course_view,C001,0,2026-03-01T10:00:00Z",
        ]
    )

    out = run("import_events", write(tmp_path, "events.csv", text))

    rejected = rejected_lines(out)
    assert sorted(rejected) == [2, 5, 7]
    assert rejected[2].startswith("occurred_at: quote not closed")
    assert rejected[7].startswith("user_id: text after a closing quote")
    assert sorted(BehaviorEvent.objects.values_list("event_id", flat=True)) == ["e2", "e3", "e5", "e7"]


def test_a_quoted_note_over_several_lines_is_kept(tmp_path, partners):
    # given a column the import keeps as it is, holding a note written over two lines
    text = "\n".join(
        [BEHAVIOR_HEADER + ",备注", 'u1,15,7,25,本科,工程师,1,"第一行\n第二行, 还有"', "u2,3,0,41,硕士,教师,0,"]
    )

    out = run("import_behavior", write(tmp_path, "b.csv", text))

    assert "2 users imported, 0 duplicates skipped, 0 rejected" in out
    assert ImportedBehavior.objects.get(user__external_id="u1").extra == {"备注": "第一行\n第二行, 还有"}


def test_a_quote_left_open_on_the_last_line_is_named(tmp_path, partners):
    text = "\n".join([EVENTS_HEADER, GOOD_EVENTS[0], 'e2,u2,zhixue,course_view,C001,"0,2026-03-01T10:00:00Z'])

    out = run("import_events", write(tmp_path, "events.csv", text))

    assert "1 events imported, 0 duplicates skipped, 1 rejected" in out
    assert rejected_lines(out) == {3: "amount: quote not closed before the end of the file"}


def test_a_utf16_file_without_a_byte_order_mark_fails_with_one_clear_line(tmp_path, partners):
    path = write(tmp_path, "events.csv", EVENTS_HEADER + "\n" + GOOD_EVENTS[0], encoding="utf-16-le")
    with pytest.raises(CommandError, match="contains NUL bytes; if the file is UTF-16, save it as UTF-8"):
        run("import_events", path)


def test_amounts_and_times_out_of_bounds_are_rejected_by_line_and_the_rest_imports(tmp_path, partners):
    # given a file with the values that once stopped feature building and scoring, and a decimal comma
    path = write(
        tmp_path,
        "events.csv",
        "\n".join(
            [
                EVENTS_HEADER,
                "e1,u1,zhixue,course_purchase,C001,999999999999.99,2026-03-02T10:00:00Z",  # 2 above the ceiling
                "e2,u1,zhixue,course_purchase,C001,1,50,2026-03-02T10:00:00Z",  # 3 unquoted comma: a field too many
                'e3,u1,zhixue,course_purchase,C001,"1,50",2026-03-02T10:00:00Z',  # 4 decimal comma
                'e4,u1,zhixue,course_purchase,C001,"1,000.00",2026-03-02T10:00:00Z',  # 5 thousands separator
                "e5,u1,zhixue,course_view,C001,0,1677-09-21T00:12:44Z",  # 6 before NumPy's range would end
                "e6,u1,zhixue,course_view,C001,0,1969-12-31T23:59:59Z",  # 7 before the window
                "e7,u1,zhixue,course_view,C001,0,9999-12-31T23:59:59Z",  # 8 beyond pandas
                "e8,u1,zhixue,course_view,C001,0,0001-01-01T00:00:00Z",  # 9 beyond pandas
                "e9,u1,zhixue,course_purchase,C001,1000000.00,1997-01-01T00:00:00Z",  # 10 good: ceiling, CDNOW's era
                "e9,u1,zhixue,course_purchase,C001,5.00,1997-01-01T00:00:00Z",  # 11 same event id, other amount
            ]
        ),
    )

    # when it is imported
    out = run("import_events", path)

    # then each bad line is named with its column and a reason that says what is accepted
    assert "1 events imported, 0 duplicates skipped, 9 rejected" in out, out
    rows = [line.strip() for line in out.splitlines() if line.strip().startswith("rejected line")]
    reasons = {int(line.split()[2].rstrip(":")): line for line in rows}
    assert "amount: above the largest amount accepted, 1000000.00" in reasons[2]
    assert 'amount: decimal commas are not accepted: write "1.50"' in reasons[4]
    assert "amount: commas are not accepted" in reasons[5]
    for line in (6, 7, 9):
        assert "occurred_at: too early, outside the accepted window 1990-01-01T00:00:00+08:00 to " in reasons[line]
    assert "occurred_at: in the future, outside the accepted window" in reasons[8]
    assert "event_id: event_id 'e9' was already sent at line 10 of this batch with another amount" in reasons[11]
    assert BehaviorEvent.objects.get().amount == Decimal("1000000.00")
