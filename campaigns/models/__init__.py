from .catalog import Bundle, Course, Film
from .campaigns import Campaign, CampaignAssignment, Rule
from .deals import Deal
from .grants import DealGrant
from .offers import Offer, RedemptionEntry
from .partners import Partner, PartnerApiKey
from .stock import StockItem
from .webhooks import WebhookAttempt, WebhookDelivery

__all__ = [
    "Bundle",
    "Campaign",
    "CampaignAssignment",
    "Course",
    "Deal",
    "DealGrant",
    "Film",
    "Offer",
    "Partner",
    "PartnerApiKey",
    "RedemptionEntry",
    "Rule",
    "StockItem",
    "WebhookAttempt",
    "WebhookDelivery",
]
