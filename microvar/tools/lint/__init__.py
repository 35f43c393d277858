"""`microvar lint`: every problem in a seeds file, its recipes and their wrap templates, found
in one pass and each reported at its place (``FILE:LINE[:COL]``).

What is checked:
  seeds      bad lines (JSON, fields, duplicate ids), markup syntax, unknown fields, odd
             characters (lone surrogates, control and invisible characters), a recipe's
             marker the seed already spells (``marker-text``)
  recipes    syntax and meaning; after an error the line is set aside and parsing goes on,
             so every bad line is reported; recipes that seeds name are checked too
  templates  Jinja syntax, unknown filters, missing includes, variables a wrap template is
             not given (rendering is strict), rendering each seed that uses it, and how many
             tokens wrapping adds against the recipe's ``allow wrap``
  tokens     (the reference tokenizer only, no model) each marker's cost against the
             allowance, with cheaper spellings; tails against ``allow tail``; alternatives
             that tokenize badly or move more tokens than the step budget; seeds longer than
             the model's context; seeds that expand (as ``--model none`` does) to fewer
             variants than the recipe presents each seed (``repeat``); seeds the tokenizer
             spells in small pieces (a note naming a multilingual model)

Severities: ``error`` (expand would fail, or the thing can never be used: exit 1),
``warning`` (works, but probably not as meant) and ``note`` (information).

The checks are small functions that yield problems, one module per family (``seeds``,
``markup``, ``recipes``, ``templates``, ``tokens``, ``expansion``), registered in ``checks``;
a ``Context`` carries what they share. Adding a check is one function and one test."""

from ...dsl.recipe import parse_recipe_all
from .checks import lint
from .context import Context, LintOptions, SeedCase
from .positions import markup_positions, raw_index, string_spans
from .problems import SEVERITIES, Problem, Report
from .recipes import designer_limit
from .seeds import MAX_TOKENS_PER_CHAR, odd_characters
from .templates import WRAP_VARIABLES

__all__ = ["MAX_TOKENS_PER_CHAR", "SEVERITIES", "WRAP_VARIABLES", "Context", "LintOptions", "Problem", "Report",
           "SeedCase", "designer_limit", "lint", "markup_positions", "odd_characters", "parse_recipe_all", "raw_index",
           "string_spans"]
