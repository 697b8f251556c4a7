"""Layer 2: backends (one adapter per uMLIP family), bundles, the ASE calculator,
corrections and reference calculators (spec strings -> ASE calculators)."""
