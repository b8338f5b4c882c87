"""Networks for every role of the recipes, built from real library classes."""
