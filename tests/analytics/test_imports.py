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
    assert EndUser.objects.count() == 2


def test_new_users_from_events_get_no_consent(tmp_path, partners):
    run("import_events", write(tmp_path, "e.csv", MIXED_EVENTS))
    user = EndUser.objects.get(external_id="u1")
    assert (user.marketing_consent, user.data_sharing_consent) == (False, False)
    assert user.home_partner.slug == "yingshi"


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
