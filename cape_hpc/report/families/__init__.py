"""One module per figure family; each holds the ``FIGURES`` records (``cape_hpc.report.registry``)
of its figures with their extract, static-figure, chart and table functions."""
