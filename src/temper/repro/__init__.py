"""temper.repro"""
