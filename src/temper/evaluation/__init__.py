"""temper.evaluation"""
