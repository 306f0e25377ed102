"""A small job app for `make demo`: one job module per verdict."""
