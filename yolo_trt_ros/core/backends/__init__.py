"""Inference backends behind one small interface (see base.py) and the `auto` choice."""
