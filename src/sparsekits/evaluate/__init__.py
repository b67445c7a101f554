"""Evaluation by the KiTS23 official rules."""
