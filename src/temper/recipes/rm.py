"""Reward model training (placeholder while the recipe is written)."""
