"""The suppression list: erased people, kept as keyed hashes, whose rows imports and the API refuse.

An erased person is recorded as HMAC-SHA256 of (home partner id, pseudonymous id) under
``ERASURE_HASH_KEY`` (``SECRET_KEY`` when that is empty). The list never holds the id itself,
and without the key it cannot be checked against guessed ids. Every path that brings people
in (the events API, ``import_events``, ``import_behavior``, ``import_outcomes``) asks here and
rejects an erased person's rows by line or item with ``ERASED_REASON``; the rest of the batch
goes in. A batch is checked with one indexed query, and none when the partners in it have
erased nobody.
"""

import hashlib
import hmac
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from django.conf import settings

from ..models import ErasedIdentity
from .ingest import Rejection

ERASED_REASON = "this person was erased at their home partner's request; their data may not be imported again"
_KEY_SALT = "crossmkt.analytics.erasure.suppression"
# Digests looked up per query; SQLite takes at most 32,766 parameters.
_LOOKUP_CHUNK = 5_000


def _key() -> bytes:
    # Django's salted_hmac derives its key this way; done once per batch here, not once per id.
    secret = settings.ERASURE_HASH_KEY or settings.SECRET_KEY
    return hashlib.sha256((_KEY_SALT + secret).encode()).digest()


def _digest(key: bytes, partner_id: int, external_id: str) -> str:
    return hmac.new(key, f"{partner_id}:{external_id}".encode(), hashlib.sha256).hexdigest()


def erased_digest(*, partner_id: int, external_id: str) -> str:
    """Return the suppression list's hash of one person: HMAC-SHA256 of partner and id, hex.

    The same value as ``salted_hmac(_KEY_SALT, f"{partner_id}:{external_id}", secret=key, algorithm="sha256")``.
    """
    return _digest(_key(), partner_id, external_id)


def _erased_digests(digests: Iterable[str]) -> set[str]:
    wanted = sorted(set(digests))
    found: set[str] = set()
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        found.update(ErasedIdentity.objects.filter(digest__in=chunk).values_list("digest", flat=True))
    return found


def erased_mask(*, partner_ids: Sequence[int], external_ids: Sequence[str]) -> np.ndarray:
    """Return, for each (partner, id) pair, whether that partner's person of that id was erased."""
    mask = np.zeros(len(external_ids), dtype=bool)
    partners = {int(pk) for pk in partner_ids}
    if not partners or not ErasedIdentity.objects.filter(partner_id__in=partners).exists():
        return mask
    pairs = pd.DataFrame({"partner": np.asarray(partner_ids, dtype="int64"), "id": np.asarray(external_ids, object)})
    distinct = pairs.drop_duplicates()
    key = _key()
    digest = {
        (partner, external_id): _digest(key, partner, external_id)
        for partner, external_id in distinct.itertuples(index=False, name=None)
    }
    erased = _erased_digests(digest.values())
    if not erased:
        return mask
    return np.fromiter(
        (digest[pair] in erased for pair in pairs.itertuples(index=False, name=None)), dtype=bool, count=len(pairs)
    )


def staged_without_erased(
    staged: pd.DataFrame, *, partner_column: str, id_column: str = "user_ext"
) -> tuple[pd.DataFrame, list[Rejection]]:
    """Split staged rows (with a ``position``) into those of people not erased, and a rejection for each other row."""
    if staged.empty:
        return staged, []
    mask = erased_mask(
        partner_ids=staged[partner_column].to_numpy(dtype="int64"), external_ids=staged[id_column].tolist()
    )
    if not mask.any():
        return staged, []
    rejections = [Rejection(int(position), "user_id", ERASED_REASON) for position in staged["position"][mask]]
    return staged[~mask].reset_index(drop=True), rejections
