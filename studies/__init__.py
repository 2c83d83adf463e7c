"""Experiments: a grid of scenarios x rules judged cell by cell, and its report (tables, figures)."""
