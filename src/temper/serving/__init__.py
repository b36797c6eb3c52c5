"""temper.serving"""
