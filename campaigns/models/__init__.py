from .catalog import Bundle, Course, Film
from .campaigns import Campaign, CampaignAssignment, Rule
from .deals import Deal
from .offers import Offer, RedemptionEntry
from .partners import Partner, PartnerApiKey

__all__ = [
    "Bundle",
    "Campaign",
    "CampaignAssignment",
    "Course",
    "Deal",
    "Film",
    "Offer",
    "Partner",
    "PartnerApiKey",
    "RedemptionEntry",
    "Rule",
]
