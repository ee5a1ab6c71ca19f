"""Datasets: sources, math generators, preparation into tidy tables."""
