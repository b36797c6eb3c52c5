"""temper.training"""
