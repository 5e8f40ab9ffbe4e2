"""Admin views of users, behaviour, model runs and scores; analytics rows are read-only here."""

from django.contrib import admin

from campaigns.admin import ReadOnlyAdminMixin

from .models import BehaviorEvent, Conversion, EndUser, ErasureLogEntry, ModelRun, UserScore


@admin.register(EndUser)
class EndUserAdmin(admin.ModelAdmin):
    list_display = [
        "external_id", "home_partner", "age", "education", "occupation", "acquisition_channel",
        "marketing_consent", "data_sharing_consent", "erased_at",
    ]
    list_filter = ["home_partner", "marketing_consent", "data_sharing_consent", "education", "acquisition_channel"]
    search_fields = ["external_id"]
    list_select_related = ["home_partner"]
    readonly_fields = ["created_at", "erased_at"]
    show_full_result_count = False


@admin.register(BehaviorEvent)
class BehaviorEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["occurred_at", "partner", "event_id", "user", "kind", "item_id", "amount"]
    list_filter = ["kind", "partner"]
    search_fields = ["event_id", "user__external_id", "item_id"]
    list_select_related = ["partner", "user"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False


@admin.register(ModelRun)
class ModelRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["model", "version", "is_active", "n_train", "data_end", "created_at"]
    list_filter = ["model", "is_active"]
    exclude = ["artifact"]


@admin.register(UserScore)
class UserScoreAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "model", "score", "value", "label", "run", "scored_at"]
    list_filter = ["model", "label"]
    search_fields = ["user__external_id"]
    list_select_related = ["user", "run"]
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


# The association analysis (关联分析) of the active recommendations run, as a sortable page under model runs.
from django.core.exceptions import PermissionDenied  # noqa: E402
from django.template import engines  # noqa: E402
from django.template.response import TemplateResponse  # noqa: E402
from django.urls import path, reverse  # noqa: E402
from django.utils.html import format_html  # noqa: E402
from django.utils.translation import gettext_lazy as _  # noqa: E402

ASSOCIATIONS_TEMPLATE = """{% extends "admin/base_site.html" %}{% load i18n %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{% url 'admin:index' %}">{% translate 'Home' %}</a>
&rsaquo; <a href="{% url 'admin:analytics_modelrun_changelist' %}">{{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; {{ title }}</div>{% endblock %}
{% block content %}<div id="content-main">
{% if run %}<p>{{ run }} · {{ n_users }} {% translate "users" %} · {% translate "pairs seen for at least" %} {{ min_pair_users }} {% translate "users" %}</p>
<table><thead><tr>{% for label, order in headers %}<th><a href="?o={{ order }}">{{ label }}</a></th>{% endfor %}</tr></thead>
<tbody>{% for row in rows %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% empty %}
<tr><td colspan="{{ headers|length }}">{% translate "No pair is frequent enough yet." %}</td></tr>{% endfor %}</tbody></table>
{% else %}<p>{% translate "No active recommendations run; train one with: python manage.py train --model recommendations" %}</p>{% endif %}
</div>{% endblock %}"""


class ModelRunWithAssociationsAdmin(ModelRunAdmin):
    """Show model runs, and at associations/ the course↔film pairs of the active recommendations run."""

    association_columns = (
        ("film_title", _("film")), ("course_title", _("course")), ("users", _("users who did both")),
        ("support", _("support")), ("confidence", _("confidence (course | film)")),
        ("confidence_reverse", _("confidence (film | course)")), ("lift", _("lift")),
        ("relative_risk", _("vs. non-viewers")), ("in_bundle", _("already bundled")),
    )

    list_display = [*ModelRunAdmin.list_display, "association_pairs"]

    @admin.display(description=_("course and film pairs"))
    def association_pairs(self, run):
        """Link the active recommendations run to its pairs page; other runs have none."""
        if run.model != ModelRun.Model.RECOMMENDATIONS or not run.is_active:
            return ""
        return format_html('<a href="{}">{}</a>', reverse("admin:analytics_modelrun_associations"), _("browse"))

    def get_urls(self):
        associations = path("associations/", self.admin_site.admin_view(self.associations_view),
                            name="analytics_modelrun_associations")
        return [associations, *super().get_urls()]

    def associations_view(self, request):
        """List the active run's pairs, sorted by the column named in ?o= (``-`` first: descending)."""
        from .services.training.recommendations import active_pairs

        if not self.has_view_permission(request):
            raise PermissionDenied
        names = [name for name, _label in self.association_columns]
        order = request.GET.get("o", "-lift")
        if order.lstrip("-") not in names:
            order = "-lift"
        run = ModelRun.objects.filter(model=ModelRun.Model.RECOMMENDATIONS, is_active=True).defer("artifact").first()
        associations = run.metrics.get("associations", {}) if run else {}
        pairs = active_pairs(run.metrics, order=order) if run else []
        context = {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": _("Course and film pairs"),
            "run": run, "n_users": associations.get("n_users"), "min_pair_users": associations.get("min_pair_users"),
            "headers": [(label, name if order == f"-{name}" else f"-{name}")
                        for name, label in self.association_columns],
            "rows": [[("✓" if pair[name] else "") if name == "in_bundle" else pair[name] for name in names]
                     for pair in pairs],
        }
        return TemplateResponse(request, engines["django"].from_string(ASSOCIATIONS_TEMPLATE), context)


admin.site.unregister(ModelRun)
admin.site.register(ModelRun, ModelRunWithAssociationsAdmin)
