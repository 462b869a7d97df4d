"""Trend computation: the vectorized math (``math``) and, beside it, the publishing side."""
