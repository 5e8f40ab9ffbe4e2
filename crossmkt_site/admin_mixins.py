"""Admin behaviour shared by the apps' admin pages."""


class ReadOnlyAdminMixin:
    """Show rows without letting anyone add, change or delete them (ledgers and logs)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
