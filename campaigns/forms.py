"""Admin forms: a rule's condition is edited as text and checked against the fields users really have."""

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Rule
from .rules import ConditionError, render, to_json, validate_text
from .selectors.rule_fields import condition_registry


class RuleForm(forms.ModelForm):
    """Edit a rule with its condition as text (``watching_count > 10 and purchasing_count > 5``)."""

    condition_text = forms.CharField(
        label=_("condition"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 80, "class": "vLargeTextField"}),
        help_text=_(
            "Which users qualify, e.g. purchasing_count > 5 and watching_count > 10, propensity >= 0.6, "
            'segment in ["film buffs"], churn_risk == "high". Empty: every user with marketing consent.'
        ),
    )

    class Meta:
        model = Rule
        # Every field but ``condition``, which is edited as text in condition_text (model order).
        fields = [
            "campaign",
            "name",
            "priority",
            "exclusive",
            "offer_kind",
            "benefit_partner",
            "deal",
            "amount_off",
            "percent_off",
            "min_spend",
            "days",
            "cost",
            "applicable_courses",
            "applicable_bundles",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance and self.instance.condition:
            self.fields["condition_text"].initial = render(self.instance.condition)

    def clean_condition_text(self) -> dict:
        text = self.cleaned_data["condition_text"].strip()
        if not text:
            return {}
        try:
            return to_json(validate_text(text, condition_registry()))
        except ConditionError as error:
            raise forms.ValidationError(str(error), code="condition") from None

    def save(self, commit=True):
        self.instance.condition = self.cleaned_data["condition_text"]
        return super().save(commit=commit)
