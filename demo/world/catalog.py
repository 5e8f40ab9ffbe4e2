"""The demo world's catalog as plain data: partners, catalog items, deals and campaigns.

Everything here is frozen dataclasses holding plain values, so that the database loader can
map each record onto its Django model without this module knowing about Django:

- money is a ``str`` holding a Decimal with two places (``"199.00"``), in CNY;
- dates (licences, deal terms, activities) are ``datetime.date`` and mean Asia/Shanghai
  calendar days, inclusive at both ends;
- campaign windows are timezone-aware ``datetime`` in Asia/Shanghai;
- references between records are by slug, SKU or external id, never by object.

``demo_catalog()`` returns the whole catalog; ``Catalog.to_dict()`` gives it as JSON-safe
dicts (dates and datetimes as ISO 8601 strings).

Rule conditions use these variables, each evaluated per user at the time the campaign is
evaluated (over all of the user's events up to then):

- ``watching_count``: number of ``film_watch`` events;
- ``watching_count_<category>``: number of ``film_watch`` events for films of that category
  (``watching_count_economics``, ``watching_count_programming``, ...);
- ``purchasing_count``: number of ``course_purchase`` events;
- ``propensity``: the active purchase-propensity score, a probability.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

PARTNER_KINDS = ("knowledge", "video", "cinema", "studio")
OFFER_KINDS = ("coupon", "free_viewing", "movie_ticket", "membership_grant")
DEAL_TRIGGER_KINDS = ("course_in_set", "spend_at_least", "membership_start")
DEAL_BENEFIT_KINDS = ("membership_days", "free_viewing", "movie_ticket", "coupon")
DEAL_STATUSES = ("draft", "active", "paused", "ended")


@dataclass(frozen=True)
class Partner:
    """A partner platform.

    ``kind`` is one of ``PARTNER_KINDS``.
    """

    slug: str
    name: str
    name_zh: str
    kind: str


@dataclass(frozen=True)
class Category:
    """A subject that matches across domains: a course subject and the films that go with it."""

    slug: str
    name: str
    name_zh: str
    film_genre: str
    film_genre_zh: str


@dataclass(frozen=True)
class Course:
    """A course sold by the knowledge platform.

    ``price`` is the list price; ``launched_on`` is the first day it can be bought.
    """

    sku: str
    partner: str
    title: str
    title_zh: str
    category: str
    tags: tuple[str, ...]
    price: str
    launched_on: dt.date


@dataclass(frozen=True)
class Film:
    """A film, series or documentary offered by a video, cinema or studio partner.

    It may be watched and promoted only on days within ``licence_start``..``licence_end``
    (inclusive). ``ticket_price`` is what a cinema charges per viewing; ``"0.00"`` elsewhere.
    """

    external_id: str
    partner: str
    title: str
    title_zh: str
    category: str
    genre: str
    genre_zh: str
    tags: tuple[str, ...]
    licence_start: dt.date
    licence_end: dt.date
    ticket_price: str


@dataclass(frozen=True)
class MembershipPlan:
    """A video partner's paid membership; ``membership_start`` events name it as item_id."""

    plan_id: str
    partner: str
    name: str
    name_zh: str
    list_price: str
    period_days: int


@dataclass(frozen=True)
class Activity:
    """A joint activity users can join (``activity_join`` events name it as item_id)."""

    activity_id: str
    partner: str
    title: str
    title_zh: str
    starts_on: dt.date
    ends_on: dt.date


@dataclass(frozen=True)
class Bundle:
    """A course sold together with the films its lessons analyse."""

    slug: str
    partner: str
    title: str
    title_zh: str
    course_skus: tuple[str, ...]
    film_ids: tuple[str, ...]
    price: str


@dataclass(frozen=True)
class Deal:
    """A membership-reciprocity or co-marketing contract between two partners.

    The trigger happens on ``source_partner``: buying any course in
    ``trigger_course_skus`` (``course_in_set``), spending at least ``trigger_min_spend``
    within ``trigger_spend_days`` (``spend_at_least``), or starting a membership
    (``membership_start``). The benefit is granted on ``benefit_partner``:
    ``benefit_days`` of membership or free viewing, one movie ticket, or a coupon of
    ``benefit_amount``. Every grant is settled at ``settlement_price_per_grant``, paid by the
    source partner to the benefit partner; ``revenue_split_share`` is the share of the
    revenue attributed to the deal's campaigns that goes to the benefit partner. Caps bound
    the number of grants and the total settlement amount.
    """

    slug: str
    name: str
    name_zh: str
    source_partner: str
    benefit_partner: str
    trigger_kind: str
    trigger_course_skus: tuple[str, ...]
    trigger_min_spend: str | None
    trigger_spend_days: int | None
    benefit_kind: str
    benefit_days: int | None
    benefit_amount: str | None
    settlement_price_per_grant: str
    revenue_split_share: str
    cap_grants: int
    cap_amount: str
    starts_on: dt.date
    ends_on: dt.date
    status: str


@dataclass(frozen=True)
class Offer:
    """What a rule gives a user.

    ``kind`` is one of ``OFFER_KINDS``. A coupon takes ``amount`` CNY or ``percent_off``
    percent off ``item_id`` (a course SKU; ``None`` means any course). ``free_viewing``
    gives ``days`` of free films on ``partner`` (``item_id`` optionally names the film
    promoted); ``movie_ticket`` one ticket at ``partner``; ``membership_grant`` ``days`` of
    membership under ``deal``. ``cost_per_issue`` is the budget reserved per issued offer:
    a coupon's face value (a percent coupon: its discount on a typical order), a partner
    benefit's settlement price. A code is valid ``valid_days`` after issue.
    """

    kind: str
    partner: str
    cost_per_issue: str
    valid_days: int
    amount: str | None = None
    percent_off: int | None = None
    days: int | None = None
    item_id: str | None = None
    deal: str | None = None


@dataclass(frozen=True)
class Rule:
    """A campaign rule: users matching ``condition`` get every offer in ``offers``.

    Rules are tried by ascending ``priority``; a user matched by an ``exclusive`` rule is not
    considered by later rules.
    """

    slug: str
    name: str
    name_zh: str
    priority: int
    condition: str
    exclusive: bool
    offers: tuple[Offer, ...]

    @property
    def effect_key(self) -> str:
        """Name the offer package for the planted campaign effects (kinds joined by '+')."""
        return "+".join(offer.kind for offer in self.offers)


@dataclass(frozen=True)
class Campaign:
    """A campaign: rules evaluated over all eligible users within a time window.

    A random ``holdout_share`` of the matched users gets nothing, so that the effect can be
    measured. A user converts by buying one of ``target_course_skus`` within
    ``conversion_window_days`` of the offer (or of being held out). ``budget`` bounds the
    summed ``cost_per_issue`` of issued offers; ``per_user_limit`` bounds offers per user
    and rule; ``global_limit`` (optional) bounds the number of users treated.
    """

    slug: str
    name: str
    name_zh: str
    description_zh: str
    owner_partner: str
    partners: tuple[str, ...]
    deal: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    budget: str
    holdout_share: float
    per_user_limit: int
    global_limit: int | None
    target_course_skus: tuple[str, ...]
    conversion_window_days: int
    rules: tuple[Rule, ...]
    # "continuous": after its first pass, the live path reaches every user the moment a rule becomes true.
    reach: str = "once"


@dataclass(frozen=True)
class Catalog:
    """The whole demo catalog."""

    partners: tuple[Partner, ...]
    categories: tuple[Category, ...]
    courses: tuple[Course, ...]
    films: tuple[Film, ...]
    membership_plans: tuple[MembershipPlan, ...]
    activities: tuple[Activity, ...]
    bundles: tuple[Bundle, ...]
    deals: tuple[Deal, ...]
    campaigns: tuple[Campaign, ...]

    def course(self, sku: str) -> Course:
        """Return the course with this SKU."""
        return next(course for course in self.courses if course.sku == sku)

    def campaign(self, slug: str) -> Campaign:
        """Return the campaign with this slug."""
        for campaign in self.campaigns:
            if campaign.slug == slug:
                return campaign
        raise KeyError(f"unknown campaign {slug!r}")

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Return the catalog as JSON-safe dicts: one list of records per kind of record."""
        return {
            field.name: [_jsonable(dataclasses.asdict(record)) for record in getattr(self, field.name)]
            for field in dataclasses.fields(self)
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


KNOWLEDGE = "zhixue"
LANYING = "lanying"
GUANGNIAN = "guangnian"
CINEMA = "xingguang"
STUDIO = "yuanjing"

PARTNERS = (
    Partner(KNOWLEDGE, "Zhixue Academy", "知学堂", "knowledge"),
    Partner(LANYING, "Lanying Video", "蓝影视频", "video"),
    Partner(GUANGNIAN, "Guangnian TV", "光年TV", "video"),
    Partner(CINEMA, "Xingguang Cinemas", "星光影城", "cinema"),
    Partner(STUDIO, "Yuanjing Documentary Studio", "远景纪录片工作室", "studio"),
)

CATEGORIES = (
    Category("economics", "Economics", "经济学", "Films about markets", "金融市场电影"),
    Category("programming", "Programming & data", "编程与数据", "Tech dramas", "科技剧"),
    Category("history", "History", "历史", "History documentaries", "历史纪录片"),
    Category("writing", "Writing & screenwriting", "写作与编剧", "Cinema & script", "电影与剧本"),
    Category("strategy", "Business strategy", "商业战略", "Business documentaries", "商业纪录片"),
)

# Courses that existed before the demo world's year begins.
_LONG_AGO = dt.date(2024, 3, 1)

# The article's course: it launches on the propensity model's observation end, so that
# "who will buy it in its first four weeks" is the propensity question.
TARGET_COURSE_SKU = "DATA-101"
TARGET_COURSE_LAUNCH = dt.date(2026, 9, 6)


def _course(
    sku: str, title: str, title_zh: str, category: str, tags: str, price: str, launched_on: dt.date = _LONG_AGO
) -> Course:
    return Course(sku, KNOWLEDGE, title, title_zh, category, tuple(tags.split()), price, launched_on)


# Within each category, earlier courses are more popular (see the world generator).
COURSES = (
    _course("ECO-101", "Economics in the Movies", "电影中的经济学", "economics", "电影 经济学 入门", "199.00"),
    _course("ECO-102", "Principles of Economics in 30 Lessons", "经济学原理30讲", "economics", "经济学 入门", "129.00"),
    _course("ECO-201", "Behavioural Finance", "行为金融学", "economics", "金融 心理学", "159.00"),
    _course("ECO-202", "Reading the Financial News", "读懂财经新闻", "economics", "金融 新闻", "99.00"),
    _course("ECO-301", "Macroeconomics for Investors", "投资者的宏观经济学", "economics", "投资 宏观", "259.00"),
    _course(
        TARGET_COURSE_SKU,
        "Introduction to Data Analysis",
        "数据分析入门",
        "programming",
        "数据分析 Python 入门",
        "199.00",
        TARGET_COURSE_LAUNCH,
    ),
    _course("PRG-101", "Python from Zero", "零基础学Python", "programming", "Python 入门", "99.00"),
    _course("PRG-201", "Coding Like in Code Life", "跟着《代码人生》学编程", "programming", "编程 剧集 入门", "169.00"),
    _course(
        "MATH-201", "Linear Algebra and Its Applications", "线性代数与应用", "programming", "数学 线性代数", "149.00"
    ),
    _course("PRG-301", "Machine Learning in Practice", "机器学习实战", "programming", "机器学习 Python", "299.00"),
    _course("HIS-101", "A History of China in Documentaries", "纪录片里的中国史", "history", "纪录片 中国史", "149.00"),
    _course("HIS-102", "Twelve Lectures on the Silk Road", "丝绸之路十二讲", "history", "丝绸之路", "119.00"),
    _course(
        "HIS-201",
        "The Second World War: Causes and Consequences",
        "二战的起因与后果",
        "history",
        "世界史 战争",
        "129.00",
    ),
    _course("HIS-202", "Archaeology for Everyone", "人人都能懂的考古学", "history", "考古 入门", "99.00"),
    _course("WRT-101", "Screenwriting Workshop", "电影剧本创作工作坊", "writing", "编剧 电影 工作坊", "299.00"),
    _course("WRT-102", "Storytelling for Everyone", "人人都会讲故事", "writing", "故事 入门", "99.00"),
    _course("WRT-201", "Writing Film Criticism", "影评写作", "writing", "影评 电影", "129.00"),
    _course("WRT-202", "Writing Non-fiction", "非虚构写作", "writing", "非虚构 写作", "149.00"),
    _course(
        "STR-101", "Corporate Strategy through Documentaries", "纪录片中的企业战略", "strategy", "战略 纪录片", "219.00"
    ),
    _course("STR-201", "The Consultant's Toolkit", "咨询顾问工具箱", "strategy", "咨询 战略", "269.00"),
    _course("STR-202", "Startup Strategy", "创业战略", "strategy", "创业 战略", "189.00"),
    _course("STR-301", "The Art of Negotiation", "谈判的艺术", "strategy", "谈判 沟通", "159.00"),
)

# Licences: most run past the demo world's year; cinema runs are short; some licences
# expired during the year and some start only after it, so licence windows matter.
_ALWAYS = (dt.date(2025, 1, 1), dt.date(2027, 12, 31))
_EXPIRED = (dt.date(2025, 1, 1), dt.date(2026, 3, 31))
_LATE_START = (dt.date(2026, 4, 1), dt.date(2028, 3, 31))
_NOT_YET = (dt.date(2026, 12, 1), dt.date(2028, 11, 30))

_GENRES = {category.slug: (category.film_genre, category.film_genre_zh) for category in CATEGORIES}


def _film(
    external_id: str,
    partner: str,
    title: str,
    title_zh: str,
    category: str,
    tags: str,
    licence: tuple[dt.date, dt.date] = _ALWAYS,
    ticket_price: str = "0.00",
) -> Film:
    genre, genre_zh = _GENRES[category]
    return Film(
        external_id,
        partner,
        title,
        title_zh,
        category,
        genre,
        genre_zh,
        tuple(tags.split()),
        licence[0],
        licence[1],
        ticket_price,
    )


def _cinema_run(first_day: dt.date, days: int = 75) -> tuple[dt.date, dt.date]:
    return first_day, first_day + dt.timedelta(days=days - 1)


# Within each category, earlier films are more popular (see the world generator).
FILMS = (
    _film("LY-10001", LANYING, "Trading Day", "交易日", "economics", "金融 剧情"),
    _film("GN-20001", GUANGNIAN, "Year of the Bubble", "泡沫之年", "economics", "金融 历史"),
    _film(
        "XG-30001",
        CINEMA,
        "The Short Seller",
        "做空者",
        "economics",
        "金融 院线",
        _cinema_run(dt.date(2025, 12, 20)),
        "49.00",
    ),
    _film("YJ-40001", STUDIO, "Market Street Economics", "菜市场经济学", "economics", "纪录片 经济学"),
    _film("LY-10002", LANYING, "Beyond the Street", "华尔街之外", "economics", "金融 剧情", _LATE_START),
    _film("GN-20002", GUANGNIAN, "Rise and Fall on the Exchange", "股海沉浮", "economics", "金融 剧集", _EXPIRED),
    _film(
        "XG-30002",
        CINEMA,
        "The Inflation Year",
        "通胀之年",
        "economics",
        "金融 院线",
        _cinema_run(dt.date(2026, 12, 18)),
        "55.00",
    ),
    _film("LY-10003", LANYING, "Code Life", "代码人生", "programming", "编程 剧集 职场"),
    _film("GN-20003", GUANGNIAN, "The Data Analyst's Path", "数据分析师的职业之路", "programming", "数据分析 职场"),
    _film("YJ-40002", STUDIO, "The Statistician's Story", "统计学家的故事", "programming", "纪录片 统计"),
    _film("LY-10004", LANYING, "Valley Days", "硅谷往事", "programming", "科技 剧集"),
    _film("GN-20004", GUANGNIAN, "Hackathon", "黑客马拉松", "programming", "编程 青春"),
    _film(
        "XG-30003",
        CINEMA,
        "Heart of the Algorithm",
        "算法之心",
        "programming",
        "科幻 院线",
        _cinema_run(dt.date(2026, 5, 1)),
        "52.00",
    ),
    _film("LY-10005", LANYING, "Midnight Debugging", "深夜调试", "programming", "编程 剧集", _EXPIRED),
    _film("GN-20005", GUANGNIAN, "Year One of AI", "人工智能元年", "programming", "科技 剧集", _NOT_YET),
    _film("YJ-40003", STUDIO, "Both Sides of the Wall", "长城内外", "history", "纪录片 中国史"),
    _film("YJ-40004", STUDIO, "Camel Bells on the Silk Road", "丝路驼铃", "history", "纪录片 丝绸之路"),
    _film("LY-10006", LANYING, "The Age of Sail", "大航海时代", "history", "纪录片 世界史"),
    _film("GN-20006", GUANGNIAN, "The Bronze Age", "青铜时代", "history", "纪录片 考古"),
    _film("YJ-40005", STUDIO, "Craftsmen of the Palace", "宫墙匠人", "history", "纪录片 手艺", _LATE_START),
    _film(
        "XG-30004",
        CINEMA,
        "Old City Tales",
        "古城往事",
        "history",
        "历史 院线",
        _cinema_run(dt.date(2026, 1, 25)),
        "45.00",
    ),
    _film("GN-20007", GUANGNIAN, "Twilight of Empires", "帝国黄昏", "history", "纪录片 世界史", _EXPIRED),
    _film(
        "XG-30005",
        CINEMA,
        "The Screenwriter",
        "编剧",
        "writing",
        "剧本 院线",
        _cinema_run(dt.date(2026, 7, 1), 90),
        "49.00",
    ),
    _film("LY-10007", LANYING, "First Draft", "第一稿", "writing", "剧本 剧情"),
    _film("GN-20008", GUANGNIAN, "The Cutting Room", "剪辑室", "writing", "电影 幕后"),
    _film("YJ-40006", STUDIO, "Between Light and Shadow", "光影之间", "writing", "纪录片 电影史"),
    _film("LY-10008", LANYING, "Storytellers", "故事会", "writing", "故事 剧集"),
    _film("GN-20009", GUANGNIAN, "The Writer's Summer", "作家的夏天", "writing", "写作 剧情", _LATE_START),
    _film("XG-30006", CINEMA, "On Set", "片场", "writing", "电影 院线", _cinema_run(dt.date(2026, 12, 5)), "52.00"),
    _film("YJ-40007", STUDIO, "The Strategy Room", "战略密室", "strategy", "纪录片 企业战略"),
    _film("LY-10009", LANYING, "Boardroom Battles", "商战", "strategy", "商战 剧集"),
    _film("GN-20010", GUANGNIAN, "The Founders", "创业者", "strategy", "创业 剧情"),
    _film("YJ-40008", STUDIO, "Supply Chain", "供应链", "strategy", "纪录片 制造"),
    _film("YJ-40009", STUDIO, "Turnaround", "转型", "strategy", "纪录片 企业战略"),
    _film(
        "XG-30007",
        CINEMA,
        "The Power of Brands",
        "品牌的力量",
        "strategy",
        "品牌 院线",
        _cinema_run(dt.date(2025, 11, 10)),
        "45.00",
    ),
    _film("GN-20011", GUANGNIAN, "Merger Storm", "并购风云", "strategy", "并购 剧集", _EXPIRED),
)

MEMBERSHIP_PLANS = (
    MembershipPlan("lanying-vip-month", LANYING, "Lanying VIP (monthly)", "蓝影VIP月卡", "30.00", 30),
    MembershipPlan("guangnian-vip-month", GUANGNIAN, "Guangnian VIP (monthly)", "光年TV会员月卡", "25.00", 30),
)

# One joint activity per month of the demo world, hosted in turn by the partners.
_ACTIVITY_THEMES = (
    ("member-day", "Joint Member Day", "联合会员日", LANYING),
    ("flash-sale", "Limited-time Discount Week", "限时折扣周", KNOWLEDGE),
    ("script-workshop", "Screenwriting Workshop", "电影剧本创作工作坊", CINEMA),
    ("expert-live", "Live Q&A with Experts", "专家直播问答", KNOWLEDGE),
    ("docs-club", "Documentary Club", "纪录片观影会", STUDIO),
    ("free-preview", "Free Preview Week", "免费试看周", GUANGNIAN),
)


def _monthly_activities(first_month: dt.date, months: int) -> tuple[Activity, ...]:
    activities = []
    for index in range(months):
        year, month = divmod(first_month.month - 1 + index, 12)
        starts_on = dt.date(first_month.year + year, month + 1, 1)
        next_year, next_month = divmod(month + 1, 12)
        ends_on = dt.date(first_month.year + year + next_year, next_month + 1, 1) - dt.timedelta(days=1)
        theme, title, title_zh, partner = _ACTIVITY_THEMES[index % len(_ACTIVITY_THEMES)]
        label = f"{starts_on:%Y-%m}"
        activities.append(
            Activity(
                f"act-{starts_on:%Y%m}-{theme}",
                partner,
                f"{title} {label}",
                f"{title_zh}（{starts_on.year}年{starts_on.month}月）",
                starts_on,
                ends_on,
            )
        )
    return tuple(activities)


ACTIVITIES = _monthly_activities(dt.date(2025, 11, 1), 12)

BUNDLES = (
    Bundle(
        "economics-in-the-movies",
        KNOWLEDGE,
        "Economics in the Movies",
        "电影中的经济学（课程+影片）",
        ("ECO-101",),
        ("LY-10001", "GN-20001", "XG-30001", "YJ-40001"),
        "239.00",
    ),
    Bundle(
        "code-life-coding",
        KNOWLEDGE,
        "Code Life: Learn to Code",
        "《代码人生》编程套餐",
        ("PRG-201", "PRG-101"),
        ("LY-10003", "GN-20004"),
        "229.00",
    ),
    Bundle(
        "strategy-documentary-consulting",
        KNOWLEDGE,
        "Strategy Documentary + Consulting Course",
        "战略纪录片+咨询课",
        ("STR-201", "STR-101"),
        ("YJ-40007", "YJ-40009"),
        "399.00",
    ),
    Bundle(
        "history-through-documentaries",
        KNOWLEDGE,
        "History through Documentaries",
        "纪录片看历史",
        ("HIS-101",),
        ("YJ-40003", "YJ-40004", "LY-10006"),
        "169.00",
    ),
    Bundle(
        "screenwriting-workshop",
        KNOWLEDGE,
        "Screenwriting Workshop with Films",
        "编剧工作坊套餐",
        ("WRT-101",),
        ("XG-30005", "LY-10007", "YJ-40006"),
        "329.00",
    ),
)

ALL_COURSE_SKUS = tuple(course.sku for course in COURSES)

DEALS = (
    Deal(
        "course-buy-lanying-month",
        "Buy a course, get a month of Lanying VIP",
        "买课送蓝影VIP月卡（会员互惠）",
        KNOWLEDGE,
        LANYING,
        "course_in_set",
        ALL_COURSE_SKUS,
        None,
        None,
        "membership_days",
        30,
        None,
        "9.00",
        "0.30",
        50_000,
        "450000.00",
        dt.date(2026, 1, 1),
        dt.date(2027, 6, 30),
        "active",
    ),
    Deal(
        "spend-199-movie-ticket",
        "Spend 199 CNY, get a movie ticket",
        "满199元送星光影城电影票",
        KNOWLEDGE,
        CINEMA,
        "spend_at_least",
        (),
        "199.00",
        30,
        "movie_ticket",
        None,
        None,
        "25.00",
        "0.20",
        20_000,
        "500000.00",
        dt.date(2026, 3, 1),
        dt.date(2027, 2, 28),
        "active",
    ),
    Deal(
        "documentary-free-week",
        "A free week of documentaries for history and strategy learners",
        "历史与战略课程学员纪录片免费试看一周",
        KNOWLEDGE,
        STUDIO,
        "course_in_set",
        tuple(course.sku for course in COURSES if course.category in ("history", "strategy")),
        None,
        None,
        "free_viewing",
        7,
        None,
        "3.00",
        "0.25",
        30_000,
        "90000.00",
        dt.date(2026, 6, 1),
        dt.date(2027, 5, 31),
        "active",
    ),
    Deal(
        "guangnian-member-course-coupon",
        "Guangnian members get a 20 CNY course coupon",
        "光年TV会员领20元课程券（联合会员日）",
        GUANGNIAN,
        KNOWLEDGE,
        "membership_start",
        (),
        None,
        None,
        "coupon",
        None,
        "20.00",
        "6.00",
        "0.50",
        10_000,
        "60000.00",
        dt.date(2027, 1, 1),
        dt.date(2027, 12, 31),
        "draft",
    ),
)


def _window(first: str, last: str) -> tuple[dt.datetime, dt.datetime]:
    """Return a campaign window from Shanghai local ISO times (the last second included)."""
    return (
        dt.datetime.fromisoformat(first).replace(tzinfo=SHANGHAI),
        dt.datetime.fromisoformat(last).replace(tzinfo=SHANGHAI),
    )


def _campaign(
    slug: str,
    name: str,
    name_zh: str,
    description_zh: str,
    partners: tuple[str, ...],
    window: tuple[dt.datetime, dt.datetime],
    budget: str,
    holdout_share: float,
    target_course_skus: tuple[str, ...],
    rules: tuple[Rule, ...],
    deal: str | None = None,
    global_limit: int | None = None,
    reach: str = "once",
) -> Campaign:
    return Campaign(
        slug,
        name,
        name_zh,
        description_zh,
        KNOWLEDGE,
        partners,
        deal,
        window[0],
        window[1],
        budget,
        holdout_share,
        1,
        global_limit,
        target_course_skus,
        14,
        rules,
        reach,
    )


CAMPAIGNS = (
    _campaign(
        "member-day-rewards",
        "Joint Member Day rewards",
        "联合会员日会员回馈",
        "文章原版规则：购课超过5次且观影超过10次的会员获20元课程券和一周免费观影；其他会员获10元课程券和一张免费电影票。",
        (KNOWLEDGE, LANYING, CINEMA),
        _window("2026-11-11T00:00:00", "2026-11-11T23:59:59"),
        "400000.00",
        0.10,
        ALL_COURSE_SKUS,
        (
            Rule(
                "heavy-members",
                "Heavy learners and watchers",
                "深度学习与观影会员",
                1,
                "purchasing_count > 5 and watching_count > 10",
                True,
                (
                    Offer("coupon", KNOWLEDGE, "20.00", 14, amount="20.00"),
                    Offer("free_viewing", LANYING, "3.00", 14, days=7),
                ),
            ),
            Rule(
                "other-members",
                "Other members",
                "其他会员",
                2,
                "purchasing_count >= 1 or watching_count >= 1",
                True,
                (Offer("coupon", KNOWLEDGE, "10.00", 14, amount="10.00"), Offer("movie_ticket", CINEMA, "25.00", 30)),
            ),
        ),
    ),
    _campaign(
        "economics-in-movies",
        "Economics in the Movies",
        "电影中的经济学",
        "看过金融市场电影的用户领《电影中的经济学》课程30元券。",
        (KNOWLEDGE, LANYING, GUANGNIAN),
        _window("2026-11-01T00:00:00", "2026-11-30T23:59:59"),
        "60000.00",
        0.15,
        ("ECO-101",),
        (
            Rule(
                "market-film-watchers",
                "Watchers of films about markets",
                "金融市场电影观众",
                1,
                "watching_count_economics >= 2",
                True,
                (Offer("coupon", KNOWLEDGE, "30.00", 14, amount="30.00", item_id="ECO-101"),),
            ),
        ),
    ),
    _campaign(
        "strategy-documentary",
        "Strategy documentary with a consulting course",
        "战略纪录片×咨询课",
        "《战略密室》纪录片免费试看一周，并赠咨询课50元券。",
        (KNOWLEDGE, STUDIO),
        _window("2026-11-05T00:00:00", "2026-12-05T23:59:59"),
        "80000.00",
        0.15,
        ("STR-201", "STR-101"),
        (
            Rule(
                "strategy-curious",
                "Strategy-curious learners",
                "关注商业战略的用户",
                1,
                "watching_count_strategy >= 1 or purchasing_count >= 2",
                True,
                (
                    Offer("free_viewing", STUDIO, "3.00", 14, days=7, item_id="YJ-40007"),
                    Offer("coupon", KNOWLEDGE, "50.00", 14, amount="50.00", item_id="STR-201"),
                ),
            ),
        ),
    ),
    _campaign(
        "coding-drama",
        "Code Life × coding course",
        "《代码人生》×编程课",
        "追《代码人生》等科技剧的观众领编程课30元券。",
        (KNOWLEDGE, LANYING),
        _window("2026-11-01T00:00:00", "2026-11-21T23:59:59"),
        "50000.00",
        0.15,
        ("PRG-201", "PRG-101"),
        (
            Rule(
                "tech-drama-fans",
                "Tech drama fans",
                "科技剧观众",
                1,
                "watching_count_programming >= 2",
                True,
                (Offer("coupon", KNOWLEDGE, "30.00", 14, amount="30.00", item_id="PRG-201"),),
            ),
        ),
    ),
    _campaign(
        "course-buy-membership",
        "Buy a course, get a month of video membership",
        "买课送视频会员月卡",
        "会员互惠：活动期间买任意课程即送蓝影VIP月卡。",
        (KNOWLEDGE, LANYING),
        _window("2026-11-01T00:00:00", "2026-12-31T23:59:59"),
        "300000.00",
        0.10,
        ALL_COURSE_SKUS,
        (
            Rule(
                "past-buyers",
                "Past course buyers",
                "购过课的用户",
                1,
                "purchasing_count >= 1",
                True,
                (Offer("membership_grant", LANYING, "9.00", 30, days=30, deal="course-buy-lanying-month"),),
            ),
        ),
        deal="course-buy-lanying-month",
        reach="continuous",
    ),
    _campaign(
        "script-workshop",
        "Screenwriting workshop",
        "电影剧本创作工作坊",
        "影迷报名电影剧本创作工作坊立减50元，并赠星光影城电影票一张。",
        (KNOWLEDGE, CINEMA),
        _window("2026-11-15T00:00:00", "2026-12-15T23:59:59"),
        "100000.00",
        0.15,
        ("WRT-101",),
        (
            Rule(
                "film-lovers",
                "Film lovers",
                "影迷",
                1,
                "watching_count >= 5",
                True,
                (
                    Offer("coupon", KNOWLEDGE, "50.00", 14, amount="50.00", item_id="WRT-101"),
                    # Any film showing at the cinema: 片场 (XG-30006) only opens on 5 December.
                    Offer("movie_ticket", CINEMA, "25.00", 30),
                ),
            ),
        ),
    ),
    _campaign(
        "double12-flash-sale",
        "Double 12 limited-time discount",
        "双十二限时折扣",
        "双十二当天，高购买意向用户全场课程八折。",
        (KNOWLEDGE,),
        _window("2026-12-12T00:00:00", "2026-12-12T23:59:59"),
        "150000.00",
        0.10,
        ALL_COURSE_SKUS,
        (
            Rule(
                "likely-buyers",
                "Likely buyers",
                "高购买意向用户",
                1,
                "propensity >= 0.1",
                True,
                (Offer("coupon", KNOWLEDGE, "30.00", 7, percent_off=20),),
            ),
        ),
    ),
)


def demo_catalog() -> Catalog:
    """Return the demo world's catalog."""
    return Catalog(PARTNERS, CATEGORIES, COURSES, FILMS, MEMBERSHIP_PLANS, ACTIVITIES, BUNDLES, DEALS, CAMPAIGNS)
