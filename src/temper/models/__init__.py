"""temper.models"""
