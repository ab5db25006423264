"""The analysis report of a model version: sections (the numbers), plots, the HTML report."""
