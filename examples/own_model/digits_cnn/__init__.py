"""A small CNN on scikit-learn's digits, written as a raynas evaluator function."""
