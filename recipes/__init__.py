"""The four quadrant recipes, shipped as package data (transferkit.builtin_recipes)."""
