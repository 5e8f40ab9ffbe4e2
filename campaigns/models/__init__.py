from .campaigns import Campaign, CampaignAssignment, Rule
from .catalog import Bundle, Course, Film
from .deals import Deal
from .grants import DealGrant
from .offers import Offer, RedemptionEntry
from .partners import Partner, PartnerApiKey
from .settlement import Direction, SettlementLine, SettlementStatement
from .stock import StockItem
from .webhooks import WebhookAttempt, WebhookDelivery

__all__ = [
    "Bundle",
    "Campaign",
    "CampaignAssignment",
    "Course",
    "Deal",
    "DealGrant",
    "Direction",
    "Film",
    "Offer",
    "Partner",
    "PartnerApiKey",
    "RedemptionEntry",
    "Rule",
    "SettlementLine",
    "SettlementStatement",
    "StockItem",
    "WebhookAttempt",
    "WebhookDelivery",
]
