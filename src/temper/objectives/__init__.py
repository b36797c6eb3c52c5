"""temper.objectives"""
