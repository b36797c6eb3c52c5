"""temper.commands"""
