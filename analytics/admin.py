"""Admin views of users, behaviour, model runs and scores; analytics rows are read-only here."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from crossmkt_site.admin_mixins import ReadOnlyAdminMixin

from .models import (
    BehaviorEvent,
    Conversion,
    EndUser,
    ErasedIdentity,
    ErasureLogEntry,
    ModelRun,
    PendingUser,
    UserLink,
    UserScore,
)
from .presenters import quality_gate_text


class UserLinkInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Other partners' ids for the user; made by the home partner's API or by an alliance-id match."""

    model = UserLink
    fk_name = "user"
    fields = ["partner", "external_id", "via", "created_at"]
    readonly_fields = ["partner", "external_id", "via", "created_at"]
    extra = 0


@admin.register(EndUser)
class EndUserAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "home_partner",
        "age",
        "education",
        "occupation",
        "acquisition_channel",
        "marketing_consent",
        "data_sharing_consent",
        "alliance_id",
        "erased_at",
    ]
    list_filter = ["home_partner", "marketing_consent", "data_sharing_consent", "education", "acquisition_channel"]
    search_fields = ["external_id", "alliance_id", "links__external_id"]
    list_select_related = ["home_partner"]
    readonly_fields = ["created_at", "erased_at"]
    inlines = [UserLinkInline]
    show_full_result_count = False


@admin.register(UserLink)
class UserLinkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "partner", "external_id", "user", "via"]
    list_filter = ["partner", "via"]
    search_fields = ["external_id", "user__external_id"]
    list_select_related = ["partner", "user"]
    show_full_result_count = False


@admin.register(BehaviorEvent)
class BehaviorEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "partner", "event_id", "user", "kind", "item_id", "amount"]
    list_filter = ["kind", "partner"]
    search_fields = ["event_id", "user__external_id", "item_id"]
    list_select_related = ["partner", "user"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False


@admin.register(UserScore)
class UserScoreAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "model", "score", "value", "label", "run", "scored_at"]
    list_filter = ["model", "label"]
    search_fields = ["user__external_id"]
    list_select_related = ["user", "run"]
    show_full_result_count = False


@admin.register(PendingUser)
class PendingUserAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Users the live path has still to evaluate: the workers drain these; a long-waiting row means they are not."""

    list_display = ["user", "first_touched_at", "last_touched_at", "touches"]
    search_fields = ["user__external_id"]
    list_select_related = ["user"]
    ordering = ["first_touched_at"]
    show_full_result_count = False


@admin.register(Conversion)
class ConversionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "partner", "conversion_id", "user", "amount", "campaign", "offer"]
    list_filter = ["partner", "campaign"]
    search_fields = ["conversion_id", "user__external_id"]
    list_select_related = ["partner", "user", "campaign", "offer"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False


@admin.register(ErasureLogEntry)
class ErasureLogEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["erased_at", "pseudonymous_id", "partner", "api_key_prefix", "events_deleted", "offers_revoked"]
    list_filter = ["partner"]
    search_fields = ["pseudonymous_id"]
    list_select_related = ["partner"]
    date_hierarchy = "erased_at"


@admin.register(ErasedIdentity)
class ErasedIdentityAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["erased_at", "partner", "digest"]
    list_filter = ["partner"]
    list_select_related = ["partner"]
    date_hierarchy = "erased_at"


def _flatten(data, prefix: str = "") -> dict[str, object]:
    """Flatten nested params or metrics into dotted keys with scalar values (lists shown by their length)."""
    flat: dict[str, object] = {}
    for key, value in (data or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = f"[{len(value)} items]"
        else:
            flat[name] = round(value, 6) if isinstance(value, float) else value
    return flat


@admin.register(ModelRun)
class ModelRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Model runs: versions, metrics, a side-by-side comparison, and the association pairs (关联分析)."""

    list_display = [
        "model",
        "version",
        "is_active",
        "n_train",
        "data_end",
        "created_at",
        "quality_gate_decision",
        "association_pairs",
    ]
    list_filter = ["model", "is_active"]
    exclude = ["artifact"]
    readonly_fields = ["quality_gate_decision", "uplift_claims"]
    actions = ["compare_runs"]
    association_columns = (
        ("film_title", _("film")),
        ("course_title", _("course")),
        ("users", _("users who did both")),
        ("support", _("support")),
        ("confidence", _("confidence (course | film)")),
        ("confidence_reverse", _("confidence (film | course)")),
        ("lift", _("lift")),
        ("relative_risk", _("vs. non-viewers")),
        ("in_bundle", _("already bundled")),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).defer("artifact")

    @admin.display(description=_("quality gate"))
    def quality_gate_decision(self, run):
        """Say whether the retraining gate activated or kept this run, and on which figures."""
        return quality_gate_text(run.quality_gate)

    @admin.display(description=_("course and film pairs"))
    def association_pairs(self, run):
        """Link the active recommendations run to its pairs page; other runs have none."""
        if run.model != ModelRun.Model.RECOMMENDATIONS or not run.is_active:
            return ""
        return format_html('<a href="{}">{}</a>', reverse("admin:analytics_modelrun_associations"), _("browse"))

    @admin.display(description=_("held-out Qini intervals"))
    def uplift_claims(self, run):
        """Say per offer package whether its held-out Qini interval lies above zero, so the optimiser may use it."""
        intervals = (run.metrics or {}).get("qini_intervals") if run.model == ModelRun.Model.UPLIFT else None
        if not intervals:
            return ""
        trusted = set(run.metrics.get("trusted_packages", ()))
        rows = format_html_join(
            "",
            "<li>{}: {} [{}, {}] ({}) — {}</li>",
            (
                (
                    package,
                    f"{interval['coefficient']:.4f}",
                    f"{interval['lower']:.4f}",
                    f"{interval['upper']:.4f}",
                    f"{round(interval['confidence'] * 100, 3):g}%",
                    _("above zero: the optimiser uses this model")
                    if package in trusted
                    else _("not above zero: this model is not used, only the rules give this package"),
                )
                for package, interval in intervals.items()
            ),
        )
        return format_html("<ul>{}</ul>", rows)

    @admin.action(description=_("Compare the selected runs side by side"))
    def compare_runs(self, request, queryset):
        ids = ",".join(str(pk) for pk in queryset.values_list("pk", flat=True))
        return HttpResponseRedirect(f"{reverse('admin:analytics_modelrun_compare')}?ids={ids}")

    def get_urls(self):
        return [
            path(
                "associations/",
                self.admin_site.admin_view(self.associations_view),
                name="analytics_modelrun_associations",
            ),
            path("compare/", self.admin_site.admin_view(self.compare_view), name="analytics_modelrun_compare"),
            *super().get_urls(),
        ]

    def _context(self, request, title) -> dict:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "title": title}

    def compare_view(self, request):
        """Show the parameters and metrics of several runs in one table, one column per run."""
        ids = [int(pk) for pk in request.GET.get("ids", "").split(",") if pk.isdigit()][:6]
        runs = list(ModelRun.objects.filter(pk__in=ids).defer("artifact").order_by("model", "version"))
        flat = [
            {
                **{f"params.{k}": v for k, v in _flatten(run.params).items()},
                **{f"metrics.{k}": v for k, v in _flatten(run.metrics).items()},
            }
            for run in runs
        ]
        keys = sorted({key for values in flat for key in values})
        rows = [
            (key, [values.get(key, "") for values in flat], len({str(values.get(key, "")) for values in flat}) > 1)
            for key in keys
        ]
        context = {**self._context(request, _("Compare model runs")), "runs": runs, "rows": rows}
        return TemplateResponse(request, "admin/analytics/modelrun/compare.html", context)

    def associations_view(self, request):
        """List the active run's pairs, sorted by the column named in ?o= (``-`` first: descending)."""
        from .services.training.recommendations import active_pairs

        context = self._context(request, _("Course and film pairs"))
        names = [name for name, _label in self.association_columns]
        order = request.GET.get("o", "-lift")
        if order.lstrip("-") not in names:
            order = "-lift"
        run = ModelRun.objects.filter(model=ModelRun.Model.RECOMMENDATIONS, is_active=True).defer("artifact").first()
        associations = run.metrics.get("associations", {}) if run else {}
        pairs = active_pairs(run.metrics, order=order) if run else []
        context |= {
            "run": run,
            "n_users": associations.get("n_users"),
            "min_pair_users": associations.get("min_pair_users"),
            "headers": [
                (label, name if order == f"-{name}" else f"-{name}") for name, label in self.association_columns
            ],
            "rows": [
                [("✓" if pair[name] else "") if name == "in_bundle" else pair[name] for name in names] for pair in pairs
            ],
        }
        return TemplateResponse(request, "admin/analytics/modelrun/associations.html", context)
