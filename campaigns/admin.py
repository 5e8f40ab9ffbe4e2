"""The partnership manager's admin: partners, catalog, deals, campaigns, offers and the ledger."""

from django.contrib import admin, messages
from django.db import models
from django.http import HttpResponse
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from crossmkt_site.admin_mixins import ReadOnlyAdminMixin
from crossmkt_site.errors import ApplicationError

from .forms import RuleForm
from .models import (
    Bundle,
    Campaign,
    CampaignAssignment,
    Course,
    Deal,
    DealGrant,
    Film,
    Offer,
    Partner,
    PartnerApiKey,
    RedemptionEntry,
    Rule,
    SettlementLine,
    SettlementStatement,
    StockItem,
    WebhookAttempt,
    WebhookDelivery,
)
from .presenters.settlement import render_csv
from .selectors.settlement import SettlementSheet, deal_zone, period_last_closed
from .services.campaign_run import campaign_dry_run, campaign_run
from .services.partners import partner_api_key_create, partner_api_key_revoke
from .services.settlement import settlement_correct, settlement_issue
from .services.webhook_outbox import webhook_redeliver


class ApiKeyInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PartnerApiKey
    readonly_fields = ["prefix", "name", "created_at", "last_used_at", "revoked_at"]
    fields = list(readonly_fields)  # every column shown is read-only
    extra = 0


@admin.register(Partner)
class PartnerAdmin(SimpleHistoryAdmin):
    list_display = ["slug", "name", "kind", "is_active", "webhook_url", "created_at"]
    list_filter = ["kind", "is_active"]
    search_fields = ["slug", "name"]
    inlines = [ApiKeyInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["issue_api_key", "revoke_all_api_keys"]

    @admin.action(description=_("Issue a new API key (shown once)"))
    def issue_api_key(self, request, queryset):
        for partner in queryset:
            _key, raw_key = partner_api_key_create(partner=partner, name=f"admin:{request.user.get_username()}")
            self.message_user(
                request,
                _("New key for %(partner)s (copy it now, it is not shown again): %(key)s")
                % {"partner": partner.slug, "key": raw_key},
                messages.WARNING,
            )

    @admin.action(description=_("Revoke all API keys"))
    def revoke_all_api_keys(self, request, queryset):
        for key in PartnerApiKey.objects.filter(partner__in=queryset, revoked_at__isnull=True):
            partner_api_key_revoke(partner=key.partner, prefix=key.prefix)
        self.message_user(request, _("Keys revoked."), messages.SUCCESS)


@admin.register(Course)
class CourseAdmin(SimpleHistoryAdmin):
    list_display = ["sku", "title", "partner", "category", "price", "partner_share", "is_active"]
    list_filter = ["partner", "category", "is_active"]
    search_fields = ["sku", "title"]


@admin.register(Film)
class FilmAdmin(SimpleHistoryAdmin):
    list_display = ["external_id", "title", "partner", "category", "licence_start", "licence_end"]
    list_filter = ["partner", "category"]
    search_fields = ["external_id", "title"]
    date_hierarchy = "licence_end"


class BundleCourseInline(admin.TabularInline):
    model = Bundle.courses.through
    extra = 1
    autocomplete_fields = ["course"]
    verbose_name = _("course in bundle")
    verbose_name_plural = _("courses in bundle")


class BundleFilmInline(admin.TabularInline):
    model = Bundle.films.through
    extra = 1
    autocomplete_fields = ["film"]
    verbose_name = _("film in bundle")
    verbose_name_plural = _("films in bundle")


@admin.register(Bundle)
class BundleAdmin(SimpleHistoryAdmin):
    list_display = ["slug", "title", "price", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["slug", "title"]
    exclude = ["courses", "films"]
    inlines = [BundleCourseInline, BundleFilmInline]


@admin.register(Deal)
class DealAdmin(SimpleHistoryAdmin):
    list_display = [
        "slug",
        "name",
        "source_partner",
        "target_partner",
        "trigger",
        "benefit",
        "status",
        "starts_at",
        "ends_at",
        "granted_count",
        "max_grants",
        "settlement_price",
    ]
    list_filter = ["status", "trigger", "benefit", "source_partner", "target_partner"]
    search_fields = ["slug", "name"]
    filter_horizontal = ["trigger_courses"]
    readonly_fields = ["granted_count", "granted_amount", "created_at"]
    date_hierarchy = "starts_at"


class RuleInline(admin.StackedInline):
    model = Rule
    form = RuleForm
    extra = 0
    fields = [
        ("name", "priority", "exclusive"),
        "condition_text",
        ("offer_kind", "benefit_partner", "deal"),
        ("amount_off", "percent_off", "min_spend", "days", "cost"),
        "applicable_courses",
        "applicable_bundles",
    ]
    filter_horizontal = ["applicable_courses", "applicable_bundles"]


def _comparison_message(campaign, forecast) -> str:
    """Say side by side what the rule-based and the optimised campaign would spend and earn."""
    comparison = forecast.comparison
    if comparison is None:
        return _("%(campaign)s: rules and optimisation not compared: %(reason)s") % {
            "campaign": campaign.slug,
            "reason": forecast.comparison_missing,
        }

    def margin(strategy) -> str:
        return str(_("unknown")) if strategy.expected_margin is None else str(strategy.expected_margin)

    text = _(
        "%(campaign)s, rules vs optimised (model forecast by %(model)s, in sample): "
        "rules spend %(rules_spend)s CNY on %(rules_users)s users "
        "for an expected incremental margin of %(rules_margin)s CNY; optimised spend %(optimised_spend)s CNY on "
        "%(optimised_users)s users (%(optimised_holdout)s held out) for %(optimised_margin)s CNY"
    ) % {
        "campaign": campaign.slug,
        "model": comparison.model,
        "rules_spend": comparison.rules.spend,
        "rules_users": comparison.rules.users,
        "rules_margin": margin(comparison.rules),
        "optimised_spend": comparison.optimised.spend,
        "optimised_users": comparison.optimised.users,
        "optimised_holdout": comparison.optimised.holdout,
        "optimised_margin": margin(comparison.optimised),
    }
    return " ".join([text, _held_out_message(comparison), *comparison.notes])


def _held_out_message(comparison) -> str:
    """Say what each choice earns per CNY on held-out randomised outcomes, with intervals, or why not compared."""
    held = comparison.held_out
    if held is None or held.first.margin_per_cny is None or held.second.margin_per_cny is None:
        return _("Held out: not compared (%(reason)s).") % {"reason": comparison.held_out_missing}

    def interval(value, lower, upper) -> str:
        return f"{value:.3f}" + ("" if lower is None else f" [{lower:.3f}, {upper:.3f}]")

    return _(
        "Held out (%(folds)s-fold cross-fitting on past experiments' users, %(confidence)s intervals): incremental "
        "margin per CNY, rules %(rules)s, optimised %(optimised)s, difference %(difference)s."
    ) % {
        "folds": comparison.held_out_folds,
        "confidence": f"{held.confidence:.0%}",
        "rules": interval(held.first.margin_per_cny, held.first.lower, held.first.upper),
        "optimised": interval(held.second.margin_per_cny, held.second.lower, held.second.upper),
        "difference": interval(held.difference_per_cny, held.difference_lower, held.difference_upper),
    }


@admin.register(Campaign)
class CampaignAdmin(SimpleHistoryAdmin):
    list_display = [
        "slug",
        "name",
        "kind",
        "mode",
        "reach",
        "status",
        "owner",
        "starts_at",
        "ends_at",
        "budget",
        "spent",
        "issued_count",
        "holdout_share",
    ]
    list_filter = ["status", "kind", "mode", "reach", "owner"]
    search_fields = ["slug", "name"]
    readonly_fields = ["spent", "issued_count", "created_at", "updated_at"]
    filter_horizontal = ["partners", "promoted_films", "promoted_courses", "promoted_bundles"]
    date_hierarchy = "starts_at"
    inlines = [RuleInline]
    actions = ["preview_campaign", "run_campaign"]

    @admin.action(description=_("Preview: reach and cost per rule (issues nothing)"))
    def preview_campaign(self, request, queryset):
        for campaign in queryset:
            try:
                forecast = campaign_dry_run(campaign=campaign)
            except ApplicationError as error:
                self.message_user(request, f"{campaign.slug}: {error.message}", messages.ERROR)
                continue
            rules = "; ".join(
                f"{rule.rule}: {rule.treated} users, {rule.offers} offers, {rule.cost} CNY" for rule in forecast.rules
            )
            self.message_user(
                request,
                _("%(campaign)s would reach %(treated)s users (%(holdout)s held out) at %(cost)s CNY — %(rules)s")
                % {
                    "campaign": campaign.slug,
                    "treated": forecast.eligible - forecast.holdout,
                    "holdout": forecast.holdout,
                    "cost": forecast.cost,
                    "rules": rules,
                },
                messages.INFO,
            )
            self.message_user(request, _comparison_message(campaign, forecast), messages.INFO)

    @admin.action(description=_("Run: issue offers on the workers"))
    def run_campaign(self, request, queryset):
        for campaign in queryset:
            try:
                result = campaign_run(campaign=campaign, wait=False)
            except ApplicationError as error:
                self.message_user(request, f"{campaign.slug}: {error.message}", messages.ERROR)
                continue
            if "group_id" in result:
                message = _("%(campaign)s: %(chunks)s chunks queued for the workers") % {
                    "campaign": campaign.slug,
                    "chunks": result["chunks"],
                }
            else:
                message = _("%(campaign)s: nothing to issue") % {"campaign": campaign.slug}
            self.message_user(request, message, messages.SUCCESS)


@admin.register(Rule)
class RuleAdmin(SimpleHistoryAdmin):
    form = RuleForm
    list_display = ["name", "campaign", "priority", "exclusive", "offer_kind", "amount_off", "percent_off", "cost"]
    list_filter = ["offer_kind", "exclusive", "campaign"]
    search_fields = ["name", "campaign__slug"]


@admin.register(Offer)
class OfferAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "code",
        "campaign",
        "user",
        "kind",
        "status",
        "cost",
        "spent",
        "issued_at",
        "expires_at",
        "redeemed_at",
    ]
    list_filter = ["status", "kind", "campaign"]
    search_fields = ["code", "user__external_id"]
    list_select_related = ["campaign", "user"]
    date_hierarchy = "issued_at"
    show_full_result_count = False


@admin.register(RedemptionEntry)
class RedemptionEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "kind", "offer", "partner", "order_amount", "discount", "idempotency_key", "reverses"]
    list_filter = ["kind", "partner"]
    search_fields = ["offer__code", "idempotency_key"]
    list_select_related = ["offer", "partner"]
    date_hierarchy = "created_at"


@admin.register(CampaignAssignment)
class CampaignAssignmentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["campaign", "user", "arm", "rule", "assigned_at"]
    list_filter = ["campaign", "arm"]
    search_fields = ["user__external_id"]
    list_select_related = ["campaign", "user", "rule"]
    show_full_result_count = False


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookAttempt
    readonly_fields = ["number", "attempted_at", "outcome", "status_code", "duration_ms", "error"]
    fields = list(readonly_fields)  # every column shown is read-only
    ordering = ["number"]
    extra = 0


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "partner",
        "event_type",
        "status",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "event_id",
    ]
    list_filter = ["status", "event_type", "partner"]
    search_fields = ["event_id", "last_error"]
    list_select_related = ["partner"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    inlines = [WebhookAttemptInline]
    actions = ["send_again"]

    def has_resend_permission(self, request):
        # The rows stay read-only; sending an event again is an operation, granted with the change permission.
        return request.user.has_perm("campaigns.change_webhookdelivery")

    @admin.action(description=_("Send failed events again (same event id)"), permissions=["resend"])
    def send_again(self, request, queryset):
        count = webhook_redeliver(delivery_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(
            request,
            _("%(count)d failed events queued again; deal grant events are not resent, their grants were given back.")
            % {"count": count},
            messages.SUCCESS,
        )


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["attempted_at", "delivery", "number", "outcome", "status_code", "duration_ms", "error"]
    list_filter = ["outcome", "delivery__event_type", "delivery__partner"]
    search_fields = ["delivery__event_id", "error"]
    list_select_related = ["delivery"]
    date_hierarchy = "attempted_at"
    show_full_result_count = False


@admin.register(DealGrant)
class DealGrantAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["reserved_at", "deal", "user", "status", "amount", "triggered_at", "confirmed_at", "compensated_at"]
    list_filter = ["status", "deal"]
    search_fields = ["user__external_id", "deal__slug"]
    list_select_related = ["deal", "user"]
    date_hierarchy = "reserved_at"
    show_full_result_count = False


@admin.register(StockItem)
class StockItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "code",
        "partner",
        "kind",
        "status",
        "face_value",
        "paid_on_use",
        "expires_at",
        "offer",
        "assigned_at",
        "returned_at",
    ]
    list_filter = ["status", "kind", "partner"]
    search_fields = ["code", "offer__code"]
    list_select_related = ["partner", "offer"]
    date_hierarchy = "expires_at"
    show_full_result_count = False


class SettlementLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = SettlementLine
    readonly_fields = [
        "id",
        "kind",
        "description",
        "quantity",
        "unit_amount",
        "amount",
        "direction",
        "corrects",
        "recorded_at",
    ]
    fields = list(readonly_fields)  # every column shown is read-only
    ordering = ["pk"]
    extra = 0


@admin.register(SettlementStatement)
class SettlementStatementAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Issued statements, read-only: corrections are booked as new lines, and statements export as CSV."""

    list_display = [
        "period_label",
        "deal",
        "status",
        "source_partner",
        "target_partner",
        "grants_count",
        "grants_amount",
        "revenue_share_amount",
        "net_amount",
        "net_direction",
        "issued_at",
    ]
    list_filter = ["status", "deal", "source_partner", "target_partner"]
    search_fields = ["deal__slug", "deal__name"]
    list_select_related = ["deal", "source_partner", "target_partner"]
    date_hierarchy = "period"
    inlines = [SettlementLineInline]
    actions = ["export_csv", "book_corrections"]

    @admin.display(description=_("period"), ordering="period")
    def period_label(self, statement):
        return statement.period_label

    @admin.action(description=_("Export as CSV"))
    def export_csv(self, request, queryset):
        statements = (
            queryset.select_related("deal", "source_partner", "target_partner")
            .prefetch_related("lines")
            .order_by("period", "deal__slug")
        )
        sheets = [SettlementSheet(statement, tuple(statement.lines.all())) for statement in statements]
        response = HttpResponse(render_csv(sheets), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="settlement.csv"'
        return response

    def has_correct_permission(self, request):
        # The statement rows stay read-only; booking a correction adds lines, granted with that permission.
        return request.user.has_perm("campaigns.add_settlementline")

    @admin.action(description=_("Book corrections for anything that changed since issue"), permissions=["correct"])
    def book_corrections(self, request, queryset):
        booked = sum(
            len(settlement_correct(statement=statement, reason=f"admin:{request.user.get_username()}"))
            for statement in queryset.filter(status=SettlementStatement.Status.ISSUED)
        )
        self.message_user(request, _("%(count)d correction lines booked.") % {"count": booked}, messages.SUCCESS)


class DealWithSettlementAdmin(DealAdmin):
    """The deal admin, with an action that issues the last finished month's settlement of the selected deals."""

    actions = [*(DealAdmin.actions or ()), "issue_last_month_settlement"]

    def has_issue_settlement_permission(self, request):
        return request.user.has_perm("campaigns.add_settlementstatement")

    @admin.action(description=_("Issue last month's settlement statement"), permissions=["issue_settlement"])
    def issue_last_month_settlement(self, request, queryset):
        issued = 0
        for deal in queryset.select_related("source_partner", "target_partner"):
            period = period_last_closed(zone=deal_zone(deal))
            try:
                settlement_issue(deal=deal, period=period, issued_by=f"admin:{request.user.get_username()}")
                issued += 1
            except ApplicationError as error:
                self.message_user(request, f"{deal.slug}: {error.message}", messages.WARNING)
        self.message_user(
            request,
            _("%(count)d settlement statements issued (or already issued).") % {"count": issued},
            messages.SUCCESS,
        )


admin.site.unregister(Deal)
admin.site.register(Deal, DealWithSettlementAdmin)
