"""What a rule condition may name: the user fields analytics describes, and a count per catalog category."""

from django.db import connection

from analytics.selectors import CATEGORY_COUNTS, CONDITION_FIELDS
from campaigns.rules import FieldSpec

from ..models import Course, Film

# The catalog table that says which category the item of each kind of event is in, and the item's id column.
_ITEM_TABLES: dict[str, tuple[type[Film] | type[Course], str]] = {
    "film_watch": (Film, "external_id"),
    "course_purchase": (Course, "sku"),
}


def item_category_sources() -> dict[str, str]:
    """Return, per event kind, the SQL giving each catalog item's partner_id, item_id and category.

    ``analytics.selectors.user_frame`` joins events to these to count them per category.
    """
    quote = connection.ops.quote_name
    return {
        kind: f"SELECT partner_id, {quote(id_column)} AS item_id, category FROM {quote(model._meta.db_table)}"
        for kind, (model, id_column) in _ITEM_TABLES.items()
    }


def condition_registry() -> dict[str, FieldSpec]:
    """Return what a rule may refer to: every user field but raw times, and a count per catalog category."""
    registry = {
        name: FieldSpec(field.type, allowed_values=field.allowed_values, description=field.description)
        for name, field in CONDITION_FIELDS.items()
    }
    for prefix, count in CATEGORY_COUNTS.items():
        model, _ = _ITEM_TABLES[count.event_kind]
        for category in model.objects.values_list("category", flat=True).distinct():
            description = count.description.format(category=category)
            registry[f"{prefix}{category}"] = FieldSpec("number", description=description)
    return registry
