"""temper.recipes"""
