"""microvar: microvariant curricula from seed texts.

The pipeline flows one way: seeds -> expand (recipe) -> token checks -> export.
Each arrow is a module; the CLI only wires them.
"""

__version__ = "0.1.0"
