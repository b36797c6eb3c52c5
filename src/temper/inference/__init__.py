"""temper.inference"""
