"""Top-level URL routes: the admin, the partner API and its documentation."""

from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from campaigns.dashboard.pipeline import metrics_view, pipeline_health_view
from campaigns.dashboard.views import dashboard_view

from .health import healthz

admin.site.site_header = _("crossmkt cross-marketing")
admin.site.site_title = _("crossmkt")
admin.site.index_title = _("Partnerships, campaigns and analytics")

urlpatterns = [
    path("healthz/", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/pipeline/", admin.site.admin_view(pipeline_health_view), name="admin-pipeline-health"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("campaigns.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file (api/docs/?script=), as the CSP requires.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

# Unknown URLs under /api/ answer in the API's JSON error format; elsewhere Django's page.
handler404 = "crossmkt_site.api_errors.not_found"
