"""Figures: the loss curves and their FLOP axes (:mod:`.plots`, :mod:`.plot_axes`), the FLOPs
ratio curve (:mod:`.ratio_plot`), the frontier (:mod:`.frontier_plot`) and the envelope over
sizes (:mod:`.isoflop_plot`). Import judging, never reports."""
