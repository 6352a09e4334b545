"""Pictures: the notes' feature-map demo (``feature_maps``); training plots live in ``viz.training``."""

from cnnkit.viz.feature_maps import feature_maps, line_filters, plot_feature_maps, random_filters

__all__ = ["feature_maps", "line_filters", "plot_feature_maps", "random_filters"]
