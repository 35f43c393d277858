"""Expansion: seeds in, token-safe variants out, no model weights needed.

``seeds.py`` reads the seeds file, ``propose.py`` (with ``reorder.py``, ``fluency.py`` and
``words.py``) adds what the seed's markup does not say, ``edits/`` holds the edit kinds,
``expander.py`` walks edit depth breadth-first, ``designer.py`` keeps the ledger of the
markup's own edits and ``tokens.py`` runs the token checks. The reference model reaches in
only through an advisor passed to the expander (``model/advisor.py``).
"""

from .expander import Expander, Reject, SeedResult, Variant, hold_out, trim_shares, variant_id

__all__ = ["Expander", "Reject", "SeedResult", "Variant", "hold_out", "trim_shares", "variant_id"]
