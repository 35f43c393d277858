"""The two small languages: seed markup (``markup.py``) and recipe files (``recipe.py``).
Their lark grammars live in the top-level ``grammars/`` folder; trees become dataclasses
here and parse errors carry file, line and column. Nothing here imports the rest of microvar."""
