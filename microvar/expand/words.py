"""Words as proposals see them: the word pattern and the function words that make poor anchors
and never trade places (English and Russian)."""

import re

WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W_]|[^\W\d_]")

# Frequent function words that make poor anchors (English and Russian).
STOPWORDS = frozenset("""
a an the and or but if then else of in on at to for from by with without into onto over under
is are was were be been being this that these those it its as not no yes do does did have has had
will would can could should may might must there their they them he she we you your our his her
what which who whom whose when where why how all any each some such than too very just also only
и в во на не что это как но а с со к ко по из за от до для о об же ли бы то так или ни да
его её ее их он она оно они мы вы ты я был была было были быть есть при без под над
""".split())  # noqa: SIM905 (a word list reads better as text)

# a reordered negation flips the meaning: "не равно" -> "равно не"
NEGATIONS = frozenset("не ни нет not no never nor".split())

# prepositions: a phrase ends before one ("cats and dogs in the yard")
PREPOSITIONS = frozenset("""
in on at to for from by with without into onto over under about after before between through
в во на по для с со к ко из от до о об при без под над про через между
""".split())  # noqa: SIM905
