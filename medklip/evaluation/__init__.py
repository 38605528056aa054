"""Evaluation: `evaluate` (a checkpoint on a prepared split or an external label set -> `metrics.json`, plots,
heatmaps), `metrics` (AUC with bootstrap intervals, thresholds, paired comparisons), `plots`, and `predict` (image
files -> findings and overlays). May import every layer before it (data, labels, model, training); never tracking.
"""
