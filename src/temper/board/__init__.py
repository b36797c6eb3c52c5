"""temper board: the web UI (see app.py)."""
