"""temper.tuning"""
