"""Two-stage prediction, volume reports and overlays."""
