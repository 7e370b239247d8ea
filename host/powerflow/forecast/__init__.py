"""Per-device demand forecasting: online models, a selector by recent error, conformal bounds."""
