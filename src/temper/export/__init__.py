"""temper.export"""
