"""Admin views of users, behaviour, model runs and scores; analytics rows are read-only here."""

from django.contrib import admin

from campaigns.admin import ReadOnlyAdminMixin

from .models import BehaviorEvent, EndUser, ModelRun, UserScore


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
