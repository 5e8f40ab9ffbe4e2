"""Settlement statements as the API, the command and the admin show them: JSON-safe data, CSV and terminal text."""

import csv
import io
from collections.abc import Iterable
from zoneinfo import ZoneInfo

from ..models import Direction
from ..selectors.settlement import SettlementSheet


def settlement_as_dict(sheet: SettlementSheet) -> dict:
    """Return the sheet as JSON-safe data: money as decimal strings, times in ISO 8601 in the deal's zone."""
    statement = sheet.statement
    zone = ZoneInfo(statement.timezone)
    balance, direction = sheet.balance
    payer, payee = statement.source_partner.slug, statement.target_partner.slug
    if direction == Direction.TARGET_TO_SOURCE:
        payer, payee = payee, payer
    return {
        "deal": statement.deal.slug,
        "period": statement.period_label,
        "status": statement.status,
        "draft": sheet.is_draft,
        "note": (
            "draft: computed now from the data so far; it changes until the month is issued"
            if sheet.is_draft
            else "issued: frozen; anything found later is a correction line"
        ),
        "timezone": statement.timezone,
        "period_start": statement.period_start.astimezone(zone).isoformat(),
        "period_end": statement.period_end.astimezone(zone).isoformat(),
        "issued_at": statement.issued_at.astimezone(zone).isoformat() if statement.issued_at else None,
        "source_partner": statement.source_partner.slug,
        "target_partner": statement.target_partner.slug,
        "totals": {
            "grants": statement.grants_count,
            "grants_amount": str(statement.grants_amount),
            "revenue_base": str(statement.revenue_base),
            "revenue_share": str(statement.revenue_share),
            "revenue_share_amount": str(statement.revenue_share_amount),
            "redemptions": statement.redemptions,
            "net_amount": str(statement.net_amount),
            "net_direction": statement.net_direction,
        },
        "balance": {"amount": str(balance), "direction": direction, "payer": payer, "payee": payee},
        "lines": [
            {
                "line": line.pk,
                "kind": line.kind,
                "description": line.description,
                "quantity": str(line.quantity),
                "unit_amount": str(line.unit_amount),
                "amount": str(line.amount),
                "direction": line.direction,
                "corrects": line.corrects_id,
                "recorded_at": line.recorded_at.astimezone(zone).isoformat(),
            }
            for line in sheet.lines
        ],
    }


CSV_COLUMNS = [
    "deal",
    "period",
    "status",
    "line",
    "kind",
    "description",
    "quantity",
    "unit_amount",
    "amount",
    "direction",
    "corrects",
    "recorded_at",
]


def render_csv(sheets: Iterable[SettlementSheet]) -> str:
    """Render statements as CSV: one row per line, then a ``balance`` row per statement with the netted balance."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for sheet in sheets:
        data = settlement_as_dict(sheet)
        head = [data["deal"], data["period"], data["status"]]
        for line in data["lines"]:
            writer.writerow(
                [
                    *head,
                    line["line"] or "",
                    line["kind"],
                    line["description"],
                    line["quantity"],
                    line["unit_amount"],
                    line["amount"],
                    line["direction"],
                    line["corrects"] or "",
                    line["recorded_at"],
                ]
            )
        balance = data["balance"]
        writer.writerow(
            [
                *head,
                "",
                "balance",
                f"{balance['payer']} pays {balance['payee']}",
                "",
                "",
                balance["amount"],
                balance["direction"],
                "",
                data["issued_at"] or "",
            ]
        )
    return out.getvalue()


def render_text(sheet: SettlementSheet) -> str:
    """Render one statement for a terminal: heading, lines, totals and who pays whom."""
    data = settlement_as_dict(sheet)
    totals, balance = data["totals"], data["balance"]
    state = "DRAFT (not issued; computed now)" if data["draft"] else f"issued {data['issued_at']}"
    lines = [
        f"Settlement {data['deal']} {data['period']} ({data['timezone']}): {state}",
        f"source {data['source_partner']} -> target {data['target_partner']}; "
        f"month {data['period_start']} to {data['period_end']}",
        f"{'#':>6} {'kind':<14} {'quantity':>14} {'unit':>10} {'amount':>14} {'paid':<17} description",
    ]
    for line in data["lines"]:
        corrects = f" (corrects #{line['corrects']})" if line["corrects"] else ""
        lines.append(
            f"{line['line'] or '-':>6} {line['kind']:<14} {line['quantity']:>14} {line['unit_amount']:>10} "
            f"{line['amount']:>14} {line['direction']:<17} {line['description']}{corrects}"
        )
    lines.append(
        f"grants {totals['grants']} = {totals['grants_amount']} CNY; revenue share {totals['revenue_share']} of "
        f"{totals['revenue_base']} = {totals['revenue_share_amount']} CNY; redemptions {totals['redemptions']}"
    )
    lines.append(f"balance: {balance['payer']} pays {balance['payee']} {balance['amount']} CNY")
    return "\n".join(lines)
