"""hwbench: phast's benchmark runner (console script ``hwbench``)."""
